import { createHash } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, beforeEach, describe, expect, test } from "vitest";
import { encodeChunk } from "../../src/format/codec.ts";
import type { ChunkRecord } from "../../src/format/model.ts";
import { ChunkFetcher, type WantedChunk } from "../src/chunk-fetcher.ts";

const K64 = 64 * 1024;
const PARAMS = "v1-c16-deflate-raw"; // 64 KiB chunks: merge gap 512 bytes
const LAYER = `sha256:${"ab".repeat(32)}`;
const hexOf = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

// A data blob of six chunks: 0–2 back to back, 3 after a 100-byte gap, 4 after a 4 KiB gap, 5 adjacent to 4.
// Even chunks are text (stored deflated), odd ones pseudo-random (stored raw).
function buildBlob(): { blob: Uint8Array; records: ChunkRecord[]; datas: Uint8Array[] } {
  const gaps = [0, 0, 0, 100, 4096, 0];
  const parts: Uint8Array[] = [];
  const records: ChunkRecord[] = [];
  const datas: Uint8Array[] = [];
  let offset = 0;
  let x = 12345;
  for (let i = 0; i < 6; i++) {
    const data =
      i % 2 === 0
        ? new TextEncoder().encode(`chunk ${i} text, said again. `.repeat(K64 / 24)).subarray(0, K64)
        : Uint8Array.from({ length: K64 - i }, () => ((x = (Math.imul(x, 1103515245) + 12345) >>> 0) >>> 24));
    const packed = encodeChunk("deflate-raw", data);
    const compressed = packed.length < data.length;
    const stored = compressed ? packed : data;
    if (gaps[i]! > 0) {
      parts.push(new Uint8Array(gaps[i]!));
      offset += gaps[i]!;
    }
    records.push({ digest: createHash("sha256").update(data).digest(), blob: 0, compressed, storedOffset: offset, storedSize: stored.length, size: data.length, uncompressedOffset: i * K64 });
    parts.push(stored);
    datas.push(data);
    offset += stored.length;
  }
  return { blob: Buffer.concat(parts), records, datas };
}

const { blob, records, datas } = buildBlob();
const want = (...idx: number[]): WantedChunk[] => idx.map((i) => ({ record: records[i]!, layerDigest: LAYER }));

type Mode = "ok" | "200" | "wrong-range" | "short" | "long" | "corrupt" | "503-once" | "stall";
let mode: Mode = "ok";
let delayMs = 0;
const requests: string[] = [];
let server: Server;
let proxy: string;

function handle(req: IncomingMessage, res: ServerResponse): void {
  requests.push(`${req.url} ${req.headers.range ?? ""}`);
  if (req.url !== `/v2/test/app/_skiff/layers/${LAYER}/${PARAMS}/data`) {
    res.writeHead(404).end();
    return;
  }
  const m = /^bytes=(\d+)-(\d+)$/.exec(req.headers.range ?? "");
  if (!m) {
    res.writeHead(400).end();
    return;
  }
  const start = Number(m[1]);
  const end = Number(m[2]);
  let body = Buffer.from(blob.subarray(start, end + 1));
  let status = 206;
  let contentRange = `bytes ${start}-${end}/${blob.length}`;
  switch (mode) {
    case "stall":
      return; // never answers
    case "200":
      status = 200;
      body = Buffer.from(blob);
      break;
    case "wrong-range":
      contentRange = `bytes ${start + 1}-${end + 1}/${blob.length}`;
      break;
    case "short":
      body = body.subarray(0, body.length - 1);
      break;
    case "long":
      body = Buffer.concat([body, Buffer.from([0])]);
      break;
    case "corrupt":
      body[body.length >> 1] = body[body.length >> 1]! ^ 0xff;
      break;
    case "503-once":
      if (requests.length === 1) {
        res.writeHead(503).end();
        return;
      }
  }
  const headers: Record<string, string | number> = { "content-type": "application/octet-stream", "content-length": body.length };
  if (status === 206) headers["content-range"] = contentRange;
  setTimeout(() => res.writeHead(status, headers).end(body), delayMs);
}

beforeAll(async () => {
  server = createServer(handle);
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  proxy = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
});
beforeEach(() => {
  mode = "ok";
  delayMs = 0;
  requests.length = 0;
});

const fetcher = (timeoutMs = 5_000) => new ChunkFetcher({ proxy, name: "test/app", params: PARAMS, timeoutMs });

describe("ChunkFetcher", () => {
  test("the blob has both stored forms", () => {
    expect(records.some((r) => r.compressed)).toBe(true);
    expect(records.some((r) => !r.compressed)).toBe(true);
  });

  test("adjacent and near chunks merge into one request; a far one gets its own; bytes verified and decoded", async () => {
    const f = fetcher();
    const got = await f.fetchChunks(want(0, 1, 2, 3, 4, 5));
    // 0–3 (gap 100 ≤ 512) in one request, 4–5 (after a 4 KiB gap) in another.
    expect(requests).toHaveLength(2);
    const s = (i: number) => records[i]!.storedOffset;
    const e = (i: number) => records[i]!.storedOffset + records[i]!.storedSize - 1;
    expect(requests.map((r) => r.split(" ")[1]).sort()).toEqual([`bytes=${s(0)}-${e(3)}`, `bytes=${s(4)}-${e(5)}`].sort());
    for (let i = 0; i < 6; i++) expect(Buffer.compare(got.get(hexOf(datas[i]!))!, datas[i]!)).toBe(0);
    expect(f.stats).toMatchObject({ bytesFetched: e(3) - s(0) + 1 + e(5) - s(4) + 1, chunksFetched: 6, requests: 2, errors: 0 });
  });

  test.each([
    ["200", /status 200, expected 206/],
    ["wrong-range", /Content-Range/],
    ["short", /body is \d+ bytes, expected/],
    ["long", /longer than/],
    ["corrupt", /does not match its digest|corrupt|decodes to/],
  ] as const)("a %s answer is rejected", async (m, error) => {
    mode = m;
    const f = fetcher();
    await expect(f.fetchChunks(want(1))).rejects.toThrow(error);
    expect(requests).toHaveLength(1); // not a transient failure: no retry
    expect(f.stats.chunksFetched).toBe(0);
    expect(f.stats.errors).toBe(1);
    mode = "ok";
    const got = await f.fetchChunks(want(1)); // nothing of the bad answer was kept
    expect(Buffer.compare(got.get(hexOf(datas[1]!))!, datas[1]!)).toBe(0);
  });

  test("a corrupted compressed chunk is rejected too", async () => {
    mode = "corrupt";
    const f = fetcher();
    await expect(f.fetchChunks(want(0))).rejects.toThrow();
    expect(f.stats.chunksFetched).toBe(0);
  });

  test("retries after a 503", async () => {
    mode = "503-once";
    const f = fetcher();
    const got = await f.fetchChunks(want(2));
    expect(Buffer.compare(got.get(hexOf(datas[2]!))!, datas[2]!)).toBe(0);
    expect(requests).toHaveLength(2);
    expect(f.stats).toMatchObject({ requests: 2, errors: 1, chunksFetched: 1 });
  });

  test("a stalled server: rejection within the timeout, in-flight request aborted", async () => {
    mode = "stall";
    const f = fetcher(500);
    const t0 = Date.now();
    await expect(f.fetchChunks(want(0, 4))).rejects.toThrow(/timed out after 500 ms/);
    const took = Date.now() - t0;
    expect(took).toBeGreaterThanOrEqual(450);
    expect(took).toBeLessThan(1_500);
  });

  test("an unreachable proxy: rejection within the timeout after retries", async () => {
    const f = new ChunkFetcher({ proxy: "http://127.0.0.1:1", name: "test/app", params: PARAMS, timeoutMs: 700 });
    const t0 = Date.now();
    await expect(f.fetchChunks(want(0))).rejects.toThrow(/timed out/);
    expect(Date.now() - t0).toBeLessThan(1_700);
    expect(f.stats.requests).toBeGreaterThan(1);
  });

  test("the timeout bounds a fault, not each request: later reads try for a second at most, and read again once the proxy is back", async () => {
    mode = "stall";
    const f = new ChunkFetcher({ proxy, name: "test/app", params: PARAMS, timeoutMs: 800 });
    const t0 = Date.now();
    await expect(f.fetchChunks(want(0))).rejects.toThrow(/timed out/);
    expect(Date.now() - t0).toBeLessThan(1_500);
    // The kernel's next requests for the same read(2), or its retries: one short try, then none right after it.
    const t1 = Date.now();
    await expect(f.fetchChunks(want(1))).rejects.toThrow(/timed out/);
    await expect(f.fetchChunks(want(2))).rejects.toThrow(/has failed for/);
    await expect(f.fetchChunks(want(2))).rejects.toThrow(/has failed for/);
    expect(Date.now() - t1).toBeLessThan(1_500);
    // The proxy answers again: the next read a moment later gets its bytes.
    mode = "ok";
    await new Promise((r) => setTimeout(r, 300));
    const got = await f.fetchChunks(want(3));
    expect(Buffer.compare(got.get(hexOf(datas[3]!))!, datas[3]!)).toBe(0);
    expect((await f.fetchChunks(want(4))).size).toBe(1);
  });

  test("single flight: 10 concurrent fetches of one chunk make one request", async () => {
    delayMs = 50;
    const f = fetcher();
    const all = await Promise.all(Array.from({ length: 10 }, () => f.fetchChunks(want(3))));
    expect(requests).toHaveLength(1);
    for (const got of all) expect(Buffer.compare(got.get(hexOf(datas[3]!))!, datas[3]!)).toBe(0);
    // Once settled, a later fetch asks again (the cache, not the fetcher, keeps chunks).
    await f.fetchChunks(want(3));
    expect(requests).toHaveLength(2);
  });
});
