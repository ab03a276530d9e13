// Background prefetch (node-agent/src/prefetcher.ts) against a fake fetcher: it waits for reads,
// keeps to its rate, runs its phases in turn and gives up on a proxy that keeps failing.
import { createHash } from "node:crypto";
import { describe, expect, test } from "vitest";
import { Bootstrap } from "../../src/format/decode.ts";
import { encodeBootstrap } from "../../src/format/encode.ts";
import { newDir, type ChunkRecord } from "../../src/format/model.ts";
import { tempDir } from "../../test/e2e/harness/workdir.ts";
import { ChunkCache } from "../src/chunk-cache.ts";
import type { ChunkFetcher, WantedChunk } from "../src/chunk-fetcher.ts";
import { Prefetcher } from "../src/prefetcher.ts";

const CHUNKS = 6;
const data = (i: number) => new TextEncoder().encode(`chunk ${i}.....`); // 14 bytes each
const hexOf = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex");

function image(): Bootstrap {
  const chunks: ChunkRecord[] = Array.from({ length: CHUNKS }, (_, i) => ({
    digest: createHash("sha256").update(data(i)).digest(),
    blob: 0,
    compressed: false,
    storedOffset: i * 14,
    storedSize: 14,
    size: 14,
    uncompressedOffset: i * 14,
  }));
  const blobs = [{ dataDigest: createHash("sha256").update("d").digest(), storedSize: CHUNKS * 14, layerDigest: `sha256:${"ab".repeat(32)}` }];
  return Bootstrap.decode(encodeBootstrap({ kind: "image", codec: 0, chunkShift: 20, platform: "linux/amd64", blobs, chunks, root: newDir() }));
}

/** Records each batch asked for (as chunk numbers) and when. */
function fakeFetcher(fail = false) {
  const batches: { chunks: number[]; at: number }[] = [];
  const fetcher = {
    async fetchChunks(wanted: WantedChunk[]) {
      batches.push({ chunks: wanted.map((w) => w.record.storedOffset / 14), at: Date.now() });
      if (fail) throw new Error("proxy down");
      return new Map(wanted.map((w) => [hexOf(data(w.record.storedOffset / 14)), data(w.record.storedOffset / 14)]));
    },
  };
  return { batches, fetcher: fetcher as unknown as ChunkFetcher };
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
});
