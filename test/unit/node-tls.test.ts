// Node's https port (src/runtime/node-tls.ts) with the entry's listener (node-shortcut.ts): warm
// ranges are still answered by the shortcut over HTTP/2 and over HTTP/1.1 on TLS, which sees the
// request's https origin (a challenge's realm is built from it), and a request it cannot parse gets
// an OCI error; and the reload watcher (tls-reload.ts) takes a pair once both files have held still,
// keeping the old one when the new one is bad.
import { execFileSync } from "node:child_process";
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { connect as http2Connect } from "node:http2";
import { request as httpsRequest } from "node:https";
import type { AddressInfo } from "node:net";
import { connect as tlsConnect } from "node:tls";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { resolveConfig } from "../../src/config/config.ts";
import { nodeHasher } from "../../src/hash/node.ts";
import { createApp } from "../../src/http/app.ts";
import type { ShortcutRequest } from "../../src/http/range-shortcut.ts";
import { nodeListener } from "../../src/runtime/node-shortcut.ts";
import { tlsServer, type TlsServer } from "../../src/runtime/node-tls.ts";
import { readTlsPair, type TlsFiles } from "../../src/runtime/tls-pair.ts";
import { watchTlsPair } from "../../src/runtime/tls-reload.ts";
import { FsStore } from "../../src/store/fs.ts";
import { bytesOf, FakeRegistry } from "./fakes.ts";

const dir = mkdtempSync(join(tmpdir(), "skiff-node-tls-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A self-signed certificate for 127.0.0.1, by openssl. */
function selfSigned(name: string): TlsFiles {
  const files = { cert: join(dir, `${name}.pem`), key: join(dir, `${name}.key`) };
  execFileSync("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", files.key, "-out", files.cert], { stdio: "ignore" });
  return files;
}

describe("the Node entry's listener on the TLS port", () => {
  const blob = bytesOf(300_000, 3);
  const seen: { url: string; answered: boolean }[] = [];
  let files: TlsFiles;
  let https: TlsServer;
  let origin: string;
  let path: string;

  beforeAll(async () => {
    const upstream = new FakeRegistry();
    const digest = upstream.addBlob(["team/app"], blob);
    path = `/v2/up/team/app/blobs/${digest}`;
    const config = resolveConfig({ upstreams: { up: { url: upstream.origin } } }, {});
    const store = await new FsStore(join(dir, "data")).init();
    const skiff = createApp({ config, fetchFor: () => upstream.fetch, store, hasher: nodeHasher });
    // The shortcut, watched: which requests it was offered and which it answered.
    const shortcut = async (request: ShortcutRequest) => {
      const answer = await skiff.shortcut(request);
      seen.push({ url: request.url, answered: answer !== undefined });
      return answer;
    };
    files = selfSigned("listener");
    https = tlsServer(await readTlsPair(files), nodeListener({ ...skiff, shortcut }));
    await new Promise<void>((resolve) => https.server.listen(0, "127.0.0.1", resolve));
    origin = `https://127.0.0.1:${(https.server.address() as AddressInfo).port}`;
  });
  afterAll(() => https.close());

  it("answers warm ranges by the shortcut over HTTP/2, seeing the https origin", async () => {
    const session = http2Connect(origin, { ca: readFileSync(files.cert) });
    const get = (range?: string) =>
      new Promise<{ status: number; body: Buffer }>((resolve, reject) => {
        const stream = session.request({ ":path": path, ...(range && { range }) });
        const parts: Buffer[] = [];
        let status = 0;
        stream.on("response", (h) => (status = Number(h[":status"])));
        stream.on("data", (d: Buffer) => parts.push(d));
        stream.on("end", () => resolve({ status, body: Buffer.concat(parts) }));
        stream.on("error", reject);
      });
    try {
      expect((await get()).status).toBe(200); // caches the blob
      await get("bytes=0-0"); // remembers its entitlement
      seen.length = 0;
      const warm = await get("bytes=1000-100999");
      expect(warm.status).toBe(206);
      expect(warm.body.equals(Buffer.from(blob.subarray(1000, 101000)))).toBe(true);
      expect(seen).toEqual([{ url: `${origin}${path}`, answered: true }]);
    } finally {
      session.close();
    }
  });

  it("and over HTTP/1.1 on TLS", async () => {
    seen.length = 0;
    const { cert } = await readTlsPair(files);
    const answer = await new Promise<{ status: number; body: Buffer }>((resolve, reject) => {
      const req = httpsRequest(`${origin}${path}`, { ca: cert, headers: { range: "bytes=5-9" }, agent: false }, (res) => {
        const parts: Buffer[] = [];
        res.on("data", (d: Buffer) => parts.push(d));
        res.on("end", () => resolve({ status: res.statusCode!, body: Buffer.concat(parts) }));
      });
      req.on("error", reject);
      req.end();
    });
    expect(answer.status).toBe(206);
    expect(answer.body.equals(Buffer.from(blob.subarray(5, 10)))).toBe(true);
    expect(seen).toEqual([{ url: `${origin}${path}`, answered: true }]);
  });

  it("answers a request it cannot parse, over HTTP/1.1 on TLS, with an OCI error", async () => {
    const { cert } = await readTlsPair(files);
    const { port } = new URL(origin);
    const answer = await new Promise<string>((resolve, reject) => {
      const socket = tlsConnect({ host: "127.0.0.1", port: Number(port), ca: cert, ALPNProtocols: ["http/1.1"] }, () => socket.write("GET /v2/ \u0000BAD HTTP/1.1\r\nHost: x\r\n\r\n"));
      let text = "";
      socket.on("data", (d: Buffer) => (text += d));
      socket.on("end", () => resolve(text));
      socket.on("error", reject);
    });
    expect(answer.split("\r\n")[0]).toBe("HTTP/1.1 400 Bad Request");
    expect(JSON.parse(answer.slice(answer.indexOf("\r\n\r\n") + 4))).toEqual({ errors: [{ code: "UNSUPPORTED", message: "malformed HTTP request" }] });
  });
});

describe("the TLS reload watcher", () => {
  it("takes a changed pair once both files held still, and keeps the old one when the new one is bad", async () => {
    const a = selfSigned("a");
    const b = selfSigned("b");
    const live = { cert: join(dir, "live.pem"), key: join(dir, "live.key") };
    copyFileSync(a.cert, live.cert);
    copyFileSync(a.key, live.key);
    const applied: string[] = [];
    const logged: string[] = [];
    const first = await readTlsPair(live);
    const watcher = watchTlsPair(live, first, (pair) => void applied.push(pair.fingerprint), (m) => logged.push(m), 50);
    const until = async (what: string, done: () => boolean) => {
      for (let i = 0; i < 100 && !done(); i++) await new Promise((r) => setTimeout(r, 20));
      expect(done(), what).toBe(true);
    };
    try {
      copyFileSync(b.cert, live.cert);
      copyFileSync(b.key, live.key);
      const second = await readTlsPair(b);
      await until("the new pair applied", () => applied.length === 1);
      expect(applied).toEqual([second.fingerprint]);
      expect(logged.at(-1)).toMatch(/^TLS certificate reloaded \(files changed\): CN=127\.0\.0\.1, valid until .*, sha256 /);

      writeFileSync(live.key, (await readTlsPair(a)).key); // b's certificate with a's key
      await until("the refusal logged", () => logged.some((m) => m.startsWith("TLS reload (files changed) failed")));
      expect(logged.at(-1)).toBe(`TLS reload (files changed) failed, still serving sha256 ${second.fingerprint}: TLS key ${live.key} does not match the certificate in ${live.cert}`);
      await watcher.reload("SIGHUP");
      expect(logged.at(-1)).toMatch(/^TLS reload \(SIGHUP\) failed, still serving sha256 /);
      expect(applied).toEqual([second.fingerprint]);
    } finally {
      watcher.stop();
    }
  });
});
