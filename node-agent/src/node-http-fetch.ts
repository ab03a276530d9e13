// The agent's HTTP client for a plain proxy: node:http(s) with keep-alive sockets, answering the
// lazy API client's FetchLike. Node's global fetch costs a process about 60 ms the first time it is
// used (its bundled undici is compiled then), and every mount pays that on a container's critical
// path; node:http is already loaded. docs/benchmarks.md, "A first node's cold start", has the numbers.
import { setMaxListeners } from "node:events";
import { Agent as HttpAgent, request as httpRequest, type IncomingMessage } from "node:http";
import { Agent as HttpsAgent, request as httpsRequest } from "node:https";
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
        resolve(responseOf(res, () => (signal.aborted ? signal.reason : undefined)));
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

/** The response as the client reads it: its body a web stream that pauses the socket while unread. */
function responseOf(res: IncomingMessage, abortReason: () => unknown): FetchResponse {
  let ended = false;
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      const fail = (err: unknown) => {
        if (!ended) controller.error(abortReason() ?? err);
        ended = true;
      };
      res.on("data", (piece: Buffer) => {
        if (ended) return;
        controller.enqueue(new Uint8Array(piece.buffer, piece.byteOffset, piece.byteLength));
        if ((controller.desiredSize ?? 0) <= 0) res.pause();
      });
      res.once("end", () => {
        if (!ended) controller.close();
        ended = true;
      });
      res.once("error", fail);
      // A connection that closes before the body has ended.
      res.once("close", () => fail(new Error("the connection closed before the body ended")));
    },
    pull() {
      res.resume();
    },
    cancel() {
      ended = true;
      res.destroy();
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
