import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { afterEach, describe, expect, test } from "vitest";
import { REPO_ROOT } from "../../test/e2e/harness/skiff.ts";
import { ChunkCache } from "../src/chunk-cache.ts";
import { releaseChunk } from "../src/chunk-slab.ts";

const hexOf = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");
const bytes = (n: number, seed: number) => Uint8Array.from({ length: n }, (_, i) => (i * 31 + seed) & 0xff);
const dirs: string[] = [];
const newDir = () => {
  const d = mkdtempSync(join(tmpdir(), "skiff-cache-"));
  dirs.push(d);
  return d;
};
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

describe("ChunkCache", () => {
  test("put then get returns the verified bytes; absent is a miss", async () => {
    const cache = await ChunkCache.open(newDir());
    const data = bytes(1000, 1);
    await cache.put(hexOf(data), data);
    expect(await cache.get(hexOf(data))).toEqual(data);
    expect(await cache.get(hexOf(bytes(10, 2)))).toBeNull();
    expect(cache.stats).toMatchObject({ entries: 1, bytes: 1000, hits: 1, misses: 1 });
  });

  test("put refuses bytes that are not what the digest names", async () => {
    const cache = await ChunkCache.open(newDir());
    await expect(cache.put(hexOf(bytes(10, 1)), bytes(10, 2))).rejects.toThrow(/do not match/);
    await expect(cache.put("../etc/passwd", bytes(1, 1))).rejects.toThrow(/not a sha256/);
    expect(cache.stats.entries).toBe(0);
  });

  test("bytes the caller has verified are not hashed again, and the reads from disk still check them", async () => {
    const dir = newDir();
    const cache = await ChunkCache.open(dir);
    const hex = hexOf(bytes(300, 5));
    // A caller that lies: taken as it is, then refused at its first read from disk.
    await cache.put(hex, bytes(300, 6), { verified: true });
    expect(readdirSync(dir)).toEqual([hex]);
    const reopened = await ChunkCache.open(dir);
    expect(await reopened.get(hex)).toBeNull();
    expect(reopened.stats).toMatchObject({ entries: 0, corrupt: 1 });
  });

  test("a corrupted file is a miss and is deleted", async () => {
    const dir = newDir();
    const cache = await ChunkCache.open(dir);
    const data = bytes(500, 3);
    const hex = hexOf(data);
    await cache.put(hex, data);
    writeFileSync(join(dir, hex), bytes(500, 4));
    expect(await cache.get(hex)).toBeNull();
    expect(readdirSync(dir)).toEqual([]);
    expect(cache.stats).toMatchObject({ entries: 0, bytes: 0, corrupt: 1 });
  });

  test("every read from disk is verified: a file that changes after a good read is caught on the next", async () => {
    const dir = newDir();
    const cache = await ChunkCache.open(dir);
    const data = bytes(200_000, 8);
    const hex = hexOf(data);
    await cache.put(hex, data);
    expect(await cache.get(hex)).toEqual(data);
    const flipped = Uint8Array.from(data);
    flipped[123_456] = flipped[123_456]! ^ 1;
    writeFileSync(join(dir, hex), flipped);
    expect(await cache.get(hex)).toBeNull();
    expect(cache.stats).toMatchObject({ hits: 1, corrupt: 1, entries: 0 });
  });

  test("reads on the worker threads return each chunk's own bytes when many run at once", async () => {
    const cache = await ChunkCache.open(newDir());
    // Sizes around the small-Buffer pool's (4 KiB): no answer may share memory with another.
    const chunks = Array.from({ length: 24 }, (_, i) => bytes([1, 100, 4095, 4096, 70_000, 1 << 20][i % 6]!, i));
    for (const c of chunks) await cache.put(hexOf(c), c);
    const got = await Promise.all(chunks.map((c) => cache.get(hexOf(c))));
    got.forEach((g, i) => expect(Buffer.compare(g!, chunks[i]!)).toBe(0));
    // No two answers share memory: buffers of their own, or slots of the chunk slab apart.
    for (const [i, a] of got.entries()) {
      for (const b of got.slice(i + 1)) {
        if (a!.buffer !== b!.buffer) continue;
        expect(a!.byteOffset + a!.byteLength <= b!.byteOffset || b!.byteOffset + b!.byteLength <= a!.byteOffset).toBe(true);
      }
    }
    expect(got.some((g) => g!.buffer instanceof SharedArrayBuffer)).toBe(true);
    for (const g of got) releaseChunk(g!);
  });

  test("the read workers don't keep a process alive: one that read a chunk exits on its own", async () => {
    const dir = newDir();
    const data = bytes(1000, 9);
    writeFileSync(join(dir, hexOf(data)), data);
    // The built module (npm run build), in a process of its own: vitest's own would hide a hang.
    const module = pathToFileURL(join(REPO_ROOT, "dist", "node-agent", "src", "verified-file-read.js")).href;
    const script = `const m = await import(${JSON.stringify(module)}); console.log((await m.readVerified(${JSON.stringify(join(dir, hexOf(data)))}, ${JSON.stringify(hexOf(data))})).status);`;
    const r = spawnSync(process.execPath, ["--input-type=module", "-e", script], { encoding: "utf8", timeout: 10_000 });
    expect(r.signal).toBeNull(); // not killed at the timeout
    expect(r.stdout.trim()).toBe("ok");
  });

  test("reopen indexes existing chunks, drops temp files and verifies truncated leftovers on read", async () => {
    const dir = newDir();
    const a = bytes(300, 5);
    const b = bytes(300, 6);
    const first = await ChunkCache.open(dir);
    await first.put(hexOf(a), a);
    // What a kill -9 can leave: a temp file mid-write, or (on a bad filesystem) a short file under the real name.
    writeFileSync(join(dir, ".tmp-deadbeef-000000"), a.subarray(0, 100));
    writeFileSync(join(dir, hexOf(b)), b.subarray(0, 100));
    const cache = await ChunkCache.open(dir);
    expect(readdirSync(dir).some((n) => n.startsWith(".tmp-"))).toBe(false);
    expect(await cache.get(hexOf(a))).toEqual(a);
    expect(await cache.get(hexOf(b))).toBeNull();
    expect(readdirSync(dir)).toEqual([hexOf(a)]);
  });

  test("a chunk being written is answered from memory until it is on disk, and a second put of it waits for the first", async () => {
    const dir = newDir();
    const cache = await ChunkCache.open(dir);
    const data = bytes(5000, 3);
    const hex = hexOf(data);
    const first = cache.put(hex, data);
    expect(cache.has(hex)).toBe(true);
    expect(await cache.get(hex)).toBe(data); // the very bytes: no file yet to read
    const second = cache.put(hex, data);
    await second;
    expect(readdirSync(dir)).toEqual([hex]);
    await first;
    const read = await cache.get(hex);
    expect(read).not.toBe(data);
    expect(Buffer.compare(read!, data)).toBe(0);
    releaseChunk(read!);
  });

  test("writes go through a temp file: only complete chunks appear under their names", async () => {
    const dir = newDir();
    const cache = await ChunkCache.open(dir);
    const data = bytes(4 * 1024 * 1024, 7);
    const hex = hexOf(data);
    const put = cache.put(hex, data);
    const seen: string[] = [];
    for (let i = 0; i < 50 && !cache.has(hex); i++) {
      seen.push(...readdirSync(dir));
      await new Promise((r) => setImmediate(r));
    }
    await put;
    // Whenever the real name was visible it was complete: reading it now verifies.
    expect(seen.filter((n) => !n.startsWith(".tmp-") && n !== hex)).toEqual([]);
    const got = await cache.get(hex);
    expect(got !== null && Buffer.compare(got, data) === 0).toBe(true);
    expect(readdirSync(dir)).toEqual([hex]);
  });

  test("a chunk being read is not evicted, even when it is the least recently used", async () => {
    const cache = await ChunkCache.open(newDir(), { maxBytes: 2000 });
    const [a, b, c] = [bytes(1000, 1), bytes(1000, 2), bytes(1000, 3)];
    await cache.put(hexOf(a), a);
    await cache.put(hexOf(b), b);
    const reading = cache.get(hexOf(a)); // a is the oldest, and now being read
    await cache.put(hexOf(c), c);
    expect(Buffer.from((await reading)!).equals(Buffer.from(a))).toBe(true);
    expect([cache.has(hexOf(a)), cache.has(hexOf(b)), cache.has(hexOf(c))]).toEqual([true, false, true]);
    expect(cache.stats.bytes).toBeLessThanOrEqual(2000);
  });

  test("LRU eviction keeps the cache under its limit, oldest first, recently read kept", async () => {
    const dir = newDir();
    const cache = await ChunkCache.open(dir, { maxBytes: 3000 });
    const chunks = [1, 2, 3, 4].map((s) => bytes(1000, s * 10));
    await cache.put(hexOf(chunks[0]!), chunks[0]!);
    await cache.put(hexOf(chunks[1]!), chunks[1]!);
    await cache.put(hexOf(chunks[2]!), chunks[2]!);
    expect(await cache.get(hexOf(chunks[0]!))).not.toBeNull(); // now 1 is the oldest
    await cache.put(hexOf(chunks[3]!), chunks[3]!);
    expect(cache.stats).toMatchObject({ entries: 3, bytes: 3000, evictions: 1 });
    expect(cache.has(hexOf(chunks[1]!))).toBe(false);
    expect(readdirSync(dir).sort()).toEqual([0, 2, 3].map((i) => hexOf(chunks[i]!)).sort());
    // A smaller limit at reopen evicts down to it.
    const smaller = await ChunkCache.open(dir, { maxBytes: 1500 });
    expect(smaller.stats).toMatchObject({ entries: 1, bytes: 1000 });
    expect(readdirSync(dir)).toHaveLength(1);
  });
});
