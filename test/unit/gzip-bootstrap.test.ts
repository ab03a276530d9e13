// Bootstraps gzipped for a node that takes gzip (src/http/gzip.ts): the same bytes once inflated,
// the identity digest in Docker-Content-Digest, another ETag, Vary on every answer, and the whole
// body only: a range or a HEAD is answered as before.
import { createHash } from "node:crypto";
import { gzipSync } from "node:zlib";
import { describe, expect, test } from "vitest";
import { resolveConfig } from "../../src/config/config.ts";
import { nodeHasher } from "../../src/hash/node.ts";
import { createApp } from "../../src/http/app.ts";
import { acceptsGzip, GzipCache, gzipWhenAccepted } from "../../src/http/gzip.ts";
import { nodeGzip } from "../../src/runtime/node-gzip.ts";
import { MemoryStore } from "../../src/store/memory.ts";
import { tarArchive } from "../e2e/harness/images.ts";
import { FakeRegistry } from "./fakes.ts";

const REPO = "lib/app";

function app() {
  const registry = new FakeRegistry();
  const files = Array.from({ length: 300 }, (_, i) => ({ name: `dir/file-${i}.txt`, type: "file" as const, data: Buffer.from(`file ${i}\n`) }));
  const layer = new Uint8Array(gzipSync(tarArchive([{ name: "dir", type: "dir" }, ...files])));
  const [digest] = registry.addImage(REPO, "v1", [layer]);
  const cfg = resolveConfig({ upstreams: { "upstream.test": { url: registry.origin, public: true } }, defaultUpstream: "upstream.test", access: { mode: "open" } }, { env: {} });
  return { proxy: createApp({ config: cfg, store: new MemoryStore(), hasher: nodeHasher, fetchFor: () => registry.fetch, convertWaitSeconds: 30 }).app, layerDigest: digest };
}

const inflate = async (res: Response) => new Uint8Array(await new Response(res.body!.pipeThrough(new DecompressionStream("gzip"))).arrayBuffer());
const sha256 = (bytes: Uint8Array) => `sha256:${createHash("sha256").update(bytes).digest("hex")}`;

describe("gzipped bootstraps", () => {
  test("the image and layer bootstraps come gzipped when asked: the same bytes, the identity digest, another ETag; identity otherwise, and for a range or a HEAD", async () => {
    const { proxy, layerDigest } = app();
    const url = `http://skiff.test/v2/${REPO}/_skiff/bootstrap/v1`;
    const plain = await proxy.request(url);
    expect(plain.status).toBe(200);
    expect(plain.headers.get("content-encoding")).toBeNull();
    expect(plain.headers.get("vary")).toMatch(/accept-encoding/i);
    const bytes = new Uint8Array(await plain.arrayBuffer());
    expect(plain.headers.get("docker-content-digest")).toBe(sha256(bytes));

    const zipped = await proxy.request(url, { headers: { "accept-encoding": "br;q=1, gzip;q=0.8" } });
    expect(zipped.status).toBe(200);
    expect(zipped.headers.get("content-encoding")).toBe("gzip");
    expect(zipped.headers.get("content-length")).toBe(String((await zipped.clone().arrayBuffer()).byteLength)); // compressed once, kept
    expect(zipped.headers.get("vary")).toMatch(/accept-encoding/i);
    expect(zipped.headers.get("docker-content-digest")).toBe(sha256(bytes));
    expect(zipped.headers.get("etag")).toBe(`"${sha256(bytes)}+gzip"`);
    const body = await zipped.clone().arrayBuffer();
    expect(body.byteLength).toBeLessThan(bytes.byteLength / 2);
    expect(Buffer.from(await inflate(zipped)).equals(Buffer.from(bytes))).toBe(true);

    const layerUrl = `http://skiff.test/v2/${REPO}/_skiff/layers/${layerDigest}/${plain.headers.get("skiff-params")}/bootstrap`;
    const layerPlain = await proxy.request(layerUrl);
    expect(layerPlain.status).toBe(200);
    const layerBytes = new Uint8Array(await layerPlain.arrayBuffer());
    const layerZipped = await proxy.request(layerUrl, { headers: { "accept-encoding": "gzip" } });
    expect(layerZipped.headers.get("content-encoding")).toBe("gzip");
    expect(Buffer.from(await inflate(layerZipped)).equals(Buffer.from(layerBytes))).toBe(true);

    const ranged = await proxy.request(url, { headers: { "accept-encoding": "gzip", range: "bytes=0-99" } });
    expect(ranged.status).toBe(206);
    expect(ranged.headers.get("content-encoding")).toBeNull();
    expect(Buffer.from(await ranged.arrayBuffer()).equals(Buffer.from(bytes.subarray(0, 100)))).toBe(true);
    const head = await proxy.request(url, { method: "HEAD", headers: { "accept-encoding": "gzip" } });
    expect(head.headers.get("content-encoding")).toBeNull();
    expect(head.headers.get("content-length")).toBe(String(bytes.byteLength));
    const refused = await proxy.request(url, { headers: { "accept-encoding": "gzip;q=0, identity" } });
    expect(refused.headers.get("content-encoding")).toBeNull();
  });

  test("GzipCache compresses a key once, answers it from memory after, and keeps within its bound, least recently used out first", async () => {
    const cache = new GzipCache(1200); // two of these bodies, gzipped
    const body = (n: number) => new TextEncoder().encode(`bootstrap ${n} `.repeat(20_000));
    const [a, again] = await Promise.all([cache.gzip("a", body(1)), cache.gzip("a", body(1))]);
    expect(again).toBe(a); // one compression for both
    expect(Buffer.from(await inflate(new Response(a))).equals(Buffer.from(body(1)))).toBe(true);
    expect(a.byteLength).toBeLessThan(1000);
    const b = await cache.gzip("b", body(2));
    expect(await cache.gzip("a", body(1))).toBe(a); // a used last: b goes first
    await cache.gzip("c", body(3));
    expect(await cache.gzip("a", body(1))).toBe(a);
    expect(await cache.gzip("b", body(2))).not.toBe(b); // evicted, compressed again
  });

  test("Node's gzip (node:zlib, the Node and Deno entries') makes the same bytes as the CompressionStream default", async () => {
    const body = new TextEncoder().encode(Array.from({ length: 5000 }, (_, i) => `usr/lib/python3/dist-packages/m${i}.py `).join(""));
    const [ours, portable] = await Promise.all([new GzipCache(undefined, nodeGzip).gzip("k", body), new GzipCache().gzip("k", body)]);
    expect(Buffer.from(ours).equals(Buffer.from(portable))).toBe(true);
    expect(Buffer.from(await inflate(new Response(ours))).equals(Buffer.from(body))).toBe(true);
  });

  test("a runtime that compresses as it sends (workerd) gets the header and the identity body", async () => {
    const req = new Request("http://x/", { headers: { "accept-encoding": "gzip" } });
    const res = await gzipWhenAccepted(req, new Response("abc", { headers: { etag: '"t"', "content-length": "3" } }), { how: "runtime" }, { key: "t", bytes: new TextEncoder().encode("abc") });
    expect(res.headers.get("content-encoding")).toBe("gzip");
    expect(res.headers.get("etag")).toBe('"t+gzip"');
    expect(await res.text()).toBe("abc");
  });

  test("Accept-Encoding: gzip, x-gzip and * count unless their q is 0", () => {
    expect(acceptsGzip("gzip")).toBe(true);
    expect(acceptsGzip("deflate, X-GZIP")).toBe(true);
    expect(acceptsGzip("*;q=0.1")).toBe(true);
    expect(acceptsGzip("gzip;q=0")).toBe(false);
    expect(acceptsGzip("gzip;q=0, *")).toBe(false);
    expect(acceptsGzip("*, gzip; q=0")).toBe(false);
    expect(acceptsGzip("*;q=0, gzip")).toBe(true);
    expect(acceptsGzip("*;q=0")).toBe(false);
    expect(acceptsGzip("br, identity")).toBe(false);
    expect(acceptsGzip(null)).toBe(false);
  });
});
