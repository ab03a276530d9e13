// The agent's node:http client against a real local server: what the lazy API client reads of a
// response, request bodies and headers, keep-alive reuse, and every way a request or its body can
// end early (abort before and during the body, a connection cut mid-body, close()), and gzipped
// answers (bootstraps) inflated only when it asked for them.
import { once } from "node:events";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { gzipSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { nodeHttpClient } from "../src/node-http-fetch.ts";

let server: Server;
let base: string;
const sockets = new Set<string>();
let handler: (req: IncomingMessage, res: ServerResponse, body: string) => void = () => {};

beforeAll(async () => {
  server = createServer(async (req, res) => {
    sockets.add(`${req.socket.remotePort}`);
    let body = "";
    for await (const piece of req) body += piece;
    handler(req, res, body);
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
});

const signal = () => AbortSignal.timeout(10_000);

async function readAll(body: ReadableStream<Uint8Array> | null): Promise<Buffer> {
  const parts: Uint8Array[] = [];
  for (const reader = body!.getReader(); ; ) {
    const { done, value } = await reader.read();
    if (done) return Buffer.concat(parts);
    parts.push(value);
  }
}

describe("nodeHttpClient", () => {
  test("asks for gzip unless the caller names an encoding, and inflates a gzipped answer only then; a cut gzip body fails", async () => {
    const client = nodeHttpClient();
    const text = Buffer.from("a bootstrap's names and modes ".repeat(5000));
    const zipped = gzipSync(text);
    handler = (req, res) => {
      if (req.url === "/cut") {
        res.writeHead(200, { "content-encoding": "gzip", "content-length": zipped.length });
        res.write(zipped.subarray(0, zipped.length >> 1));
        setTimeout(() => res.destroy(), 20);
        return;
      }
      // Gzipped whatever was asked, as a misbehaving server might.
      res.writeHead(200, { "content-encoding": "gzip", "x-asked": String(req.headers["accept-encoding"]) });
      res.end(zipped);
    };
    try {
      const asked = await client.fetch(`${base}/bootstrap`, { method: "GET", headers: {}, signal: signal() });
      expect(asked.headers.get("x-asked")).toBe("gzip");
      expect((await readAll(asked.body)).equals(text)).toBe(true);
      const identity = await client.fetch(`${base}/range`, { method: "GET", headers: { "Accept-Encoding": "identity" }, signal: signal() });
      expect(identity.headers.get("x-asked")).toBe("identity");
      expect((await readAll(identity.body)).equals(zipped)).toBe(true); // the bytes as sent
      const cut = await client.fetch(`${base}/cut`, { method: "GET", headers: {}, signal: signal() });
      await expect(readAll(cut.body)).rejects.toThrow();
    } finally {
      client.close();
    }
  });

  test("answers status, headers and the whole body; sends the method, headers and a body; reuses its connection", async () => {
    const client = nodeHttpClient();
    const big = Buffer.alloc(3 << 20, 7);
    handler = (req, res, body) => {
      res.writeHead(206, "Partial", { "x-seen": `${req.method} ${req.headers.range} ${body}`, "x-multi": ["a", "b"] });
      res.end(big);
    };
    try {
      sockets.clear();
      for (let i = 0; i < 3; i++) {
        const res = await client.fetch(`${base}/x`, { method: "POST", headers: { range: "bytes=0-1" }, signal: signal(), body: "héllo" });
        expect(res.status).toBe(206);
        expect(res.statusText).toBe("Partial");
        expect(res.headers.get("X-Seen")).toBe("POST bytes=0-1 héllo");
        expect(res.headers.get("x-multi")).toBe("a, b");
        expect(res.headers.get("x-absent")).toBeNull();
        expect((await readAll(res.body)).equals(big)).toBe(true);
      }
      expect(sockets.size).toBe(1);
    } finally {
      client.close();
    }
  });

  test("an aborted signal rejects with its reason, before the response and while the body streams", async () => {
    const client = nodeHttpClient();
    let respond: (() => void) | undefined;
    handler = (_req, res) => {
      res.writeHead(200, { "content-length": "1000000" });
      res.write(Buffer.alloc(1000));
      respond = () => res.end(Buffer.alloc(999_000));
    };
    try {
      const before = new AbortController();
      before.abort(new Error("stopped early"));
      await expect(client.fetch(`${base}/a`, { method: "GET", headers: {}, signal: before.signal })).rejects.toThrow("stopped early");

      const during = new AbortController();
      const res = await client.fetch(`${base}/b`, { method: "GET", headers: {}, signal: during.signal });
      const reader = res.body!.getReader();
      expect((await reader.read()).value!.length).toBeGreaterThan(0);
      during.abort(new Error("stopped mid-body"));
      await expect(reader.read()).rejects.toThrow("stopped mid-body");
      respond?.();

      const waiting = new AbortController();
      handler = () => {}; // never answers
      const pending = client.fetch(`${base}/c`, { method: "GET", headers: {}, signal: waiting.signal });
      setTimeout(() => waiting.abort(new Error("no answer")), 50);
      await expect(pending).rejects.toThrow("no answer");
    } finally {
      client.close();
    }
  });

  test("a connection cut mid-body errors the body; a refused connection rejects; close() ends requests in flight", async () => {
    const client = nodeHttpClient();
    handler = (_req, res) => {
      res.writeHead(200, { "content-length": "100000" });
      res.write(Buffer.alloc(10), () => res.socket?.destroy());
    };
    try {
      const res = await client.fetch(`${base}/cut`, { method: "GET", headers: {}, signal: signal() });
      await expect(readAll(res.body)).rejects.toThrow();

      const closed = createServer();
      closed.listen(0, "127.0.0.1");
      await once(closed, "listening");
      const port = (closed.address() as AddressInfo).port;
      await new Promise((r) => closed.close(r));
      await expect(client.fetch(`http://127.0.0.1:${port}/`, { method: "GET", headers: {}, signal: signal() })).rejects.toMatchObject({ code: "ECONNREFUSED" });

      handler = () => {}; // never answers
      const pending = client.fetch(`${base}/hang`, { method: "GET", headers: {}, signal: signal() });
      setTimeout(() => client.close(), 50);
      await expect(pending).rejects.toThrow();
    } finally {
      client.close();
    }
  });

  test("a GET that meets a kept-alive socket closing under it goes again on another; a POST does not", async () => {
    const client = nodeHttpClient();
    // The server drops every connection at its second request, unanswered, as one closing an idle
    // socket just as the client reuses it would.
    const served = new WeakMap<object, number>();
    const sockets = new Set<object>();
    handler = (req, res) => {
      const n = (served.get(req.socket) ?? 0) + 1;
      served.set(req.socket, n);
      sockets.add(req.socket);
      if (n > 1) return void req.socket.destroy();
      res.end("ok");
    };
    try {
      for (let i = 0; i < 3; i++) {
        const res = await client.fetch(`${base}/again`, { method: "GET", headers: {}, signal: signal() });
        expect((await readAll(res.body)).toString()).toBe("ok");
      }
      expect(sockets.size).toBe(3);
      await expect(client.fetch(`${base}/post`, { method: "POST", headers: {}, signal: signal(), body: "x" })).rejects.toMatchObject({ code: "ECONNRESET" });
    } finally {
      client.close();
    }
  });

  test("many requests on one signal (a fetcher's batch) raise no listener-leak warning", async () => {
    const client = nodeHttpClient();
    handler = (_req, res) => res.end("ok");
    const warnings: string[] = [];
    const onWarning = (w: Error) => warnings.push(w.name);
    process.on("warning", onWarning);
    try {
      const shared = signal();
      const answers = await Promise.all(Array.from({ length: 20 }, () => client.fetch(`${base}/many`, { method: "GET", headers: {}, signal: shared })));
      for (const res of answers) expect((await readAll(res.body)).toString()).toBe("ok");
      await new Promise((r) => setImmediate(r)); // warnings are emitted on the next tick
      expect(warnings).not.toContain("MaxListenersExceededWarning");
    } finally {
      process.off("warning", onWarning);
      client.close();
    }
  });

  test("a body read slowly holds the socket back instead of buffering it all", async () => {
    const client = nodeHttpClient();
    const total = 64 << 20;
    let written = 0;
    handler = (_req, res) => {
      res.writeHead(200, { "content-length": String(total) });
      const piece = Buffer.alloc(1 << 20);
      const pump = () => {
        while (written < total) {
          written += piece.length;
          if (!res.write(piece)) return void res.once("drain", pump);
        }
        res.end();
      };
      pump();
    };
    try {
      const res = await client.fetch(`${base}/slow`, { method: "GET", headers: {}, signal: signal() });
      const reader = res.body!.getReader();
      await reader.read();
      await new Promise((r) => setTimeout(r, 300));
      expect(written).toBeLessThan(total / 2); // the server is held back by the unread body
      await reader.cancel();
    } finally {
      client.close();
    }
  });
});
