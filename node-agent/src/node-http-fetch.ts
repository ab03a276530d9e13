// The agent's HTTP client for a plain proxy: node:http(s) with keep-alive sockets, answering the
// lazy API client's FetchLike. Node's global fetch costs a process about 60 ms the first time it is
// used (its bundled undici is compiled then), and every mount pays that on a container's critical
// path; node:http is already loaded. docs/benchmarks.md, "A first node's cold start", has the numbers.
import { setMaxListeners } from "node:events";
import { Agent as HttpAgent, request as httpRequest, type IncomingMessage } from "node:http";
import { Agent as HttpsAgent, request as httpsRequest } from "node:https";
import { pipeline, type Readable } from "node:stream";
import { createGunzip } from "node:zlib";
import type { FetchLike, FetchResponse } from "../../src/client/lazy-api.ts";

export interface NodeHttpClient {
  fetch: FetchLike;
  /** Ends every request in flight and the idle sockets. */
  close(): void;
}

/**
 * A request on a kept-alive socket can meet the server closing it just then; a GET that failed so
 * before any answer is sent again on another socket, this many times at most.
 */
const STALE_SOCKET_RETRIES = 3;

export function nodeHttpClient(): NodeHttpClient {
  const agents = { http: new HttpAgent({ keepAlive: true }), https: new HttpsAgent({ keepAlive: true }) };
  const once = (url: string, init: Parameters<FetchLike>[1], retries: number): Promise<FetchResponse> =>
    new Promise<FetchResponse>((resolve, reject) => {
      const { signal } = init;
      if (signal.aborted) return reject(signal.reason);
      // One signal bounds all the requests of a batch (chunk-fetcher.ts), each listening to it:
      // more than Node's default of 10 is expected, not a leak to warn about.
      setMaxListeners(0, signal);
      const https = url.startsWith("https:");
      const headers: Record<string, string> = { ...init.headers };
      // Bootstraps come gzipped when asked (src/http/gzip.ts); a caller that names an encoding
      // (ranges ask for identity) gets the bytes as sent.
      const gunzips = !Object.keys(headers).some((h) => h.toLowerCase() === "accept-encoding");
      if (gunzips) headers["accept-encoding"] = "gzip";
      if (init.body !== undefined) headers["content-length"] = String(Buffer.byteLength(init.body));
      const req = (https ? httpsRequest : httpRequest)(url, { method: init.method, headers, agent: https ? agents.https : agents.http });
      const onAbort = () => req.destroy(signal.reason instanceof Error ? signal.reason : new Error(String(signal.reason)));
      signal.addEventListener("abort", onAbort, { once: true });
      const done = () => signal.removeEventListener("abort", onAbort);
      req.once("error", (err: NodeJS.ErrnoException) => {
        done();
        if (signal.aborted) return reject(signal.reason);
        const stale = req.reusedSocket && (err.code === "ECONNRESET" || err.code === "EPIPE");
        if (stale && retries > 0 && (init.method === "GET" || init.method === "HEAD")) return resolve(once(url, init, retries - 1));
        reject(err);
      });
      req.once("response", (res) => {
        res.once("close", done);
        const gzipped = gunzips && /^\s*(x-)?gzip\s*$/i.test(String(res.headers["content-encoding"] ?? ""));
        resolve(responseOf(res, gzipped, () => (signal.aborted ? signal.reason : undefined)));
      });
      req.end(init.body);
    });
  return {
    fetch: (url, init) => once(url, init, STALE_SOCKET_RETRIES),
    close: () => {
      agents.http.destroy();
      agents.https.destroy();
    },
  };
}

/**
 * The response as the client reads it: its body a web stream that pauses the socket while unread,
 * inflated when `gzipped` (a gzip bomb is only as large as the reader lets the body grow).
 */
function responseOf(res: IncomingMessage, gzipped: boolean, abortReason: () => unknown): FetchResponse {
  const source: Readable = gzipped ? pipeline(res, createGunzip(), () => {}) : res;
  let ended = false;
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      const fail = (err: unknown) => {
        if (!ended) controller.error(abortReason() ?? err);
        ended = true;
      };
      source.on("data", (piece: Buffer) => {
        if (ended) return;
        controller.enqueue(new Uint8Array(piece.buffer, piece.byteOffset, piece.byteLength));
        if ((controller.desiredSize ?? 0) <= 0) source.pause();
      });
      source.once("end", () => {
        if (!ended) controller.close();
        ended = true;
      });
      source.once("error", fail);
      // A connection that closes before the body has ended.
      source.once("close", () => fail(new Error("the connection closed before the body ended")));
    },
    pull() {
      source.resume();
    },
    cancel() {
      ended = true;
      source.destroy();
    },
  }, { highWaterMark: 4 });
  return {
    status: res.statusCode ?? 0,
    statusText: res.statusMessage ?? "",
    headers: {
      get: (name) => {
        const value = res.headers[name.toLowerCase()];
        return value === undefined ? null : Array.isArray(value) ? value.join(", ") : value;
      },
    },
    body,
  };
}
