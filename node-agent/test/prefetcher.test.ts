// Background prefetch (node-agent/src/prefetcher.ts) against a fake fetcher: it waits for reads,
// keeps to its rate, runs its phases in turn, gives way when the reads stop matching its list and
// gives up on a proxy that keeps failing.
import { createHash } from "node:crypto";
import { describe, expect, test } from "vitest";
import { Bootstrap } from "../../src/format/decode.ts";
import { encodeBootstrap } from "../../src/format/encode.ts";
import { newDir, type ChunkRecord } from "../../src/format/model.ts";
import { tempDir } from "../../test/e2e/harness/workdir.ts";
import { ChunkCache } from "../src/chunk-cache.ts";
import type { ChunkFetcher, WantedChunk } from "../src/chunk-fetcher.ts";
import { LayersForeground, Prefetcher } from "../src/prefetcher.ts";

const CHUNKS = 6;
const data = (i: number) => new TextEncoder().encode(`chunk ${i}.....`); // 14 bytes each
const hexOf = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex");

function image(count = CHUNKS): Bootstrap {
  const chunks: ChunkRecord[] = Array.from({ length: count }, (_, i) => ({
    digest: createHash("sha256").update(data(i)).digest(),
    blob: 0,
    compressed: false,
    storedOffset: i * 14,
    storedSize: 14,
    size: 14,
    uncompressedOffset: i * 14,
  }));
  const blobs = [{ dataDigest: createHash("sha256").update("d").digest(), storedSize: count * 14, layerDigest: `sha256:${"ab".repeat(32)}` }];
  return Bootstrap.decode(encodeBootstrap({ kind: "image", codec: 0, chunkShift: 20, platform: "linux/amd64", blobs, chunks, root: newDir() }));
}

/** Records each batch asked for (as chunk numbers) and when, and the most batches in flight at once. */
function fakeFetcher(fail = false, delayMs = 0) {
  const batches: { chunks: number[]; at: number }[] = [];
  const flight = { now: 0, most: 0 };
  const fetcher = {
    async fetchChunks(wanted: WantedChunk[], onChunk?: (hex: string, bytes: Uint8Array) => void) {
      batches.push({ chunks: wanted.map((w) => w.record.storedOffset / 14), at: Date.now() });
      flight.most = Math.max(flight.most, ++flight.now);
      await new Promise((r) => setTimeout(r, delayMs));
      flight.now--;
      if (fail) throw new Error("proxy down");
      const got = new Map(wanted.map((w) => [hexOf(data(w.record.storedOffset / 14)), data(w.record.storedOffset / 14)]));
      for (const [hex, bytes] of got) onChunk?.(hex, bytes);
      return got;
    },
  };
  return { batches, flight, fetcher: fetcher as unknown as ChunkFetcher };
}

const always = { idle: () => Promise.resolve() };
const all = Array.from({ length: CHUNKS }, (_, i) => i);
const phase = (chunks: number[], quietMs = 0) => ({ chunks, quietMs });

describe("Prefetcher", () => {
  // A list that runs ahead of the reads (quietMs 0) is how a learned list and --prefetch FILE run.
  test("a list that runs ahead of the reads (a learned list) starts nothing while a read waits on the proxy, then fetches and caches every chunk once", async () => {
    const cache = await ChunkCache.open(tempDir("prefetch-cache"));
    const { batches, fetcher } = fakeFetcher();
    let readDone!: () => void;
    const reading = new Promise<void>((r) => (readDone = r));
    const p = new Prefetcher(image(), cache, fetcher, { idle: () => reading }, [phase(all), phase(all)], { batchBytes: 28 });
    p.start();
    await new Promise((r) => setTimeout(r, 50));
    expect(batches).toHaveLength(0);
    readDone();
    for (let i = 0; i < 200 && !p.stats.done; i++) await new Promise((r) => setTimeout(r, 10));
    expect(p.stats).toMatchObject({ done: true, chunks: CHUNKS, failed: 0 });
    const fetched = batches.flatMap((b) => b.chunks);
    expect(fetched.sort()).toEqual(all); // each once, though both phases list them all
    for (let i = 0; i < CHUNKS; i++) expect(cache.has(hexOf(data(i)))).toBe(true);
    expect(batches.every((b) => b.chunks.length <= 2)).toBe(true);
  });

  test("phases run in turn, each with its own pause in the reads, and --prefetch-rate spaces the batches out", async () => {
    const cache = await ChunkCache.open(tempDir("prefetch-cache"));
    const { batches, fetcher } = fakeFetcher();
    // 14 bytes per batch at 140 bytes/s: a batch every 100 ms at the most.
    const quiets = new Set<number>();
    const foreground = { idle: (quietMs: number) => (quiets.add(quietMs), Promise.resolve()) };
    const p = new Prefetcher(image(), cache, fetcher, foreground, [phase([4, 1]), phase(all, 250)], { batchBytes: 14, bytesPerSecond: 140, concurrency: 2 });
    p.start();
    for (let i = 0; i < 200 && !p.stats.done; i++) await new Promise((r) => setTimeout(r, 20));
    expect(p.stats).toMatchObject({ done: true, chunks: CHUNKS, failed: 0 });
    expect(batches.slice(0, 2).flatMap((b) => b.chunks).sort()).toEqual([1, 4]);
    expect(quiets).toEqual(new Set([0, 250])); // each phase asks for its own pause in the reads
    expect(batches.at(-1)!.at - batches[0]!.at).toBeGreaterThanOrEqual((CHUNKS - 1) * 100 - 5);
  });

  test("a list the reads stop matching (another program's) gives way: one small batch at a time, after a pause in the reads; it runs ahead again when they match", async () => {
    const cache = await ChunkCache.open(tempDir("prefetch-cache"));
    const { batches, flight, fetcher } = fakeFetcher(false, 5);
    const quiets: number[] = [];
    let readDone!: () => void;
    const reading = new Promise<void>((r) => (readDone = r)); // a read waits on the proxy until told otherwise
    const foreground = { idle: (quietMs: number) => (quiets.push(quietMs), reading) };
    const list = Array.from({ length: 40 }, (_, i) => i);
    const logs: string[] = [];
    const p = new Prefetcher(image(80), cache, fetcher, foreground, [{ chunks: list, quietMs: 0, followsReads: true }], { batchBytes: 56, concurrency: 2, log: (m) => logs.push(m) });
    p.start();
    for (let i = 0; i < 15; i++) p.sawRead(40 + i);
    expect(p.offTrack).toBe(false); // not judged before 16 distinct chunks
    p.sawRead(40); // the same chunk again counts once
    expect(p.offTrack).toBe(false);
    p.sawRead(55);
    expect(p.offTrack).toBe(true);
    expect(logs).toEqual(["prefetch list gives way: reads stopped matching it"]);
    readDone();
    for (let i = 0; i < 200 && batches.length < 6; i++) await new Promise((r) => setTimeout(r, 10));
    expect(batches.length).toBeGreaterThanOrEqual(6);
    expect(batches.slice(0, 6).every((b) => b.chunks.length === 1)).toBe(true); // a quarter of a batch
    expect(flight.most).toBe(1);
    expect(quiets).toContain(100);
    // Reads that match the list again: it runs ahead as before, in whole batches, two at a time.
    for (let i = 0; i < 16; i++) p.sawRead(20 + i);
    expect(p.offTrack).toBe(false);
    for (let i = 0; i < 300 && !p.stats.done; i++) await new Promise((r) => setTimeout(r, 10));
    expect(p.stats).toMatchObject({ done: true, chunks: 40, failed: 0 });
    expect(batches.some((b) => b.chunks.length === 4)).toBe(true);
    expect(flight.most).toBe(2);
  });

  test("a list the reads keep matching never gives way, and the phase that fetches everything is never judged", async () => {
    const cache = await ChunkCache.open(tempDir("prefetch-cache"));
    const { fetcher } = fakeFetcher();
    const list = Array.from({ length: 40 }, (_, i) => i);
    const p = new Prefetcher(image(80), cache, fetcher, { idle: () => new Promise(() => {}) }, [{ chunks: list, quietMs: 0, followsReads: true }]);
    p.start();
    // Mostly matching, with a few strays: still on track.
    for (let i = 0; i < 40; i++) p.sawRead(i % 3 === 0 ? 40 + i : i);
    expect(p.offTrack).toBe(false);
    const everything = new Prefetcher(image(80), cache, fetcher, { idle: () => new Promise(() => {}) }, [{ chunks: list, quietMs: 250 }]);
    everything.start();
    for (let i = 40; i < 80; i++) everything.sawRead(i);
    expect(everything.offTrack).toBe(false);
    await Promise.race([p.stop(), everything.stop(), new Promise((r) => setTimeout(r, 10))]);
  });

  test("a list held back by reads that stopped (a mount with --prefetch all, nothing reading) gives way to the next phase after a second; a last list waits on", async () => {
    const cache = await ChunkCache.open(tempDir("prefetch-cache"));
    const MiB2 = 2 ** 21;
    const big = Bootstrap.decode(encodeBootstrap({
      kind: "image", codec: 0, chunkShift: 22, platform: "linux/amd64",
      blobs: [{ dataDigest: createHash("sha256").update("d").digest(), storedSize: 12 * MiB2, layerDigest: `sha256:${"ab".repeat(32)}` }],
      chunks: Array.from({ length: 12 }, (_, i) => ({ digest: createHash("sha256").update(data(i)).digest(), blob: 0, compressed: false, storedOffset: i * MiB2, storedSize: MiB2, size: MiB2, uncompressedOffset: i * MiB2 })),
      root: newDir(),
    }));
    // 2 MiB chunks on the record, 14 bytes on the wire: only the pacing counts here.
    const fetched: number[] = [];
    const fetcher = {
      async fetchChunks(wanted: WantedChunk[], onChunk?: (hex: string, bytes: Uint8Array) => void) {
        const indexes = wanted.map((w) => w.record.storedOffset / MiB2);
        fetched.push(...indexes);
        const got = new Map(indexes.map((i) => [hexOf(data(i)), data(i)]));
        for (const [hex, bytes] of got) onChunk?.(hex, bytes);
        return got;
      },
    } as unknown as ChunkFetcher;
    const everything = Array.from({ length: 12 }, (_, i) => i);
    const p = new Prefetcher(big, cache, fetcher, always, [{ chunks: everything, quietMs: 0, followsReads: true }, phase(everything)], { concurrency: 2 });
    p.start();
    await new Promise((r) => setTimeout(r, 300));
    expect(fetched).toHaveLength(2); // 4 MiB of 2 MiB chunks, unread: held
    for (let i = 0; i < 300 && !p.stats.done; i++) await new Promise((r) => setTimeout(r, 10));
    expect(p.stats).toMatchObject({ done: true, chunks: 12, failed: 0 });

    // The same list alone waits on for the reads, however long they pause.
    const alone = new Prefetcher(big, await ChunkCache.open(tempDir("prefetch-cache")), fetcher, always, [{ chunks: everything, quietMs: 0, followsReads: true }], { concurrency: 2 });
    fetched.length = 0;
    alone.start();
    await new Promise((r) => setTimeout(r, 1500));
    expect(fetched).toHaveLength(2);
    expect(alone.stats.done).toBe(false);
    alone.sawRead(0); // a read takes one: more may come (a batch per worker woken)
    for (let i = 0; i < 100 && fetched.length < 3; i++) await new Promise((r) => setTimeout(r, 10));
    await new Promise((r) => setTimeout(r, 50));
    expect(fetched.length).toBeGreaterThanOrEqual(3);
    expect(fetched.length).toBeLessThanOrEqual(4);
    await alone.stop();
    expect(alone.stats.done).toBe(true);
  });

  test("an image's layers as one foreground: idle only once no layer's reader is busy", async () => {
    const reader = () => {
      const r = { busy: false, waiters: [] as (() => void)[], foregroundIdle: async () => (r.busy ? new Promise<void>((w) => r.waiters.push(w)) : undefined) };
      return r;
    };
    const settle = (r: ReturnType<typeof reader>) => ((r.busy = false), r.waiters.splice(0).forEach((w) => w()));
    const [a, b] = [reader(), reader()];
    const layers = new LayersForeground();
    layers.add(a);
    layers.add(b);
    b.busy = true;
    let idle = false;
    void layers.idle(0).then(() => (idle = true));
    await new Promise((r) => setTimeout(r, 20));
    expect(idle).toBe(false); // layer b's read waits on the proxy
    a.busy = true; // and now a's too, before b's ends
    settle(b);
    await new Promise((r) => setTimeout(r, 20));
    expect(idle).toBe(false);
    settle(a);
    await new Promise((r) => setTimeout(r, 20));
    expect(idle).toBe(true);
    layers.delete(a);
    a.busy = true; // a layer unmounted holds nothing back
    await layers.idle(0);
  });

  test("gives up after three failed batches in a row, and says so once", async () => {
    const cache = await ChunkCache.open(tempDir("prefetch-cache"));
    const { batches, fetcher } = fakeFetcher(true);
    const logs: string[] = [];
    const p = new Prefetcher(image(), cache, fetcher, always, [phase(all)], { batchBytes: 14, concurrency: 1, log: (m) => logs.push(m) });
    p.start();
    for (let i = 0; i < 200 && !p.stats.done; i++) await new Promise((r) => setTimeout(r, 10));
    expect(p.stats).toMatchObject({ done: true, chunks: 0, failed: 3 });
    expect(batches).toHaveLength(3);
    expect(logs).toEqual([expect.stringMatching(/prefetch stopped after 3 failed requests in a row: proxy down/)]);
  });

  test("a phase within the cache's room (a layer filled in the background) stops before the cache passes 90 % of its size, and says so once", async () => {
    // Chunks of 12 bytes (14 by their records, which the check counts for those in flight) in a
    // cache of 64: four fit under 57.6 bytes, a fifth would not (48 cached + 14).
    const cache = await ChunkCache.open(tempDir("prefetch-cache"), { maxBytes: 64 });
    const { batches, fetcher } = fakeFetcher();
    const logs: string[] = [];
    const p = new Prefetcher(image(), cache, fetcher, always, [{ chunks: all, quietMs: 0, withinCacheRoom: true }], { batchBytes: 14, concurrency: 2, log: (m) => logs.push(m) });
    p.start();
    for (let i = 0; i < 200 && !p.stats.done; i++) await new Promise((r) => setTimeout(r, 10));
    expect(p.stats).toMatchObject({ done: true, chunks: 4, failed: 0 });
    expect(batches.flatMap((b) => b.chunks)).toEqual([0, 1, 2, 3]);
    expect(cache.stats).toMatchObject({ bytes: 48, evictions: 0 });
    expect(logs).toEqual(["prefetch stops: the chunk cache would be more than 90 % full"]);
  });
});
