// Sibling prefetch (node-agent/src/sibling-prefetch.ts) over a bootstrap of small files, with a
// fake fetch: what starts it, what it fetches and in which order, how it paces and bounds itself.
import { createHash } from "node:crypto";
import { describe, expect, test } from "vitest";
import { Bootstrap } from "../../src/format/decode.ts";
import { encodeBootstrap } from "../../src/format/encode.ts";
import { newDir, type ChunkRecord, type FsNode } from "../../src/format/model.ts";
import type { WantedChunk } from "../src/chunk-fetcher.ts";
import { SIBLING_MAX_FILE_BYTES, SiblingPrefetch } from "../src/sibling-prefetch.ts";

const KiB = 1024;

/**
 * `/pkg/__pycache__` with `files` (name → stored size; each file one chunk, stored in the order
 * given), `/lib/big.so` (one chunk over the size bound) and `/other/x.pyc`.
 */
function image(files: [string, number][]) {
  const chunks: ChunkRecord[] = [];
  let offset = 0;
  const file = (storedSize: number, size = storedSize * 3): FsNode => {
    const index = chunks.length;
    chunks.push({ digest: createHash("sha256").update(`chunk ${index}`).digest(), blob: 0, compressed: true, storedOffset: offset, storedSize, size, uncompressedOffset: 0 });
    offset += storedSize;
    return { ...newDir(), type: "file", perm: 0o644, size, children: undefined, chunks: [index] };
  };
  const cache = newDir();
  for (const [name, storedSize] of files) cache.children!.set(name, file(storedSize));
  const pkg = newDir();
  pkg.children!.set("__pycache__", cache);
  const lib = newDir();
  lib.children!.set("big.so", file(100 * KiB, SIBLING_MAX_FILE_BYTES + 1));
  const other = newDir();
  other.children!.set("x.pyc", file(KiB));
  const root = newDir();
  root.children!.set("pkg", pkg);
  root.children!.set("lib", lib);
  root.children!.set("other", other);
  const blobs = [{ dataDigest: createHash("sha256").update("d").digest(), storedSize: offset, layerDigest: `sha256:${"ab".repeat(32)}` }];
  const b = Bootstrap.decode(encodeBootstrap({ kind: "image", codec: 1, chunkShift: 20, platform: "linux/amd64", blobs, chunks, root }));
  const inodeOf = (path: string) => b.lookup(path)!;
  return { b, inodeOf };
}

/** Records the batches asked for (as stored offsets); each settles when `release` is called. */
function harness(b: Bootstrap) {
  const cached = new Set<number>();
  const batches: number[][] = [];
  const pending: (() => void)[] = [];
  let inFlight = 0;
  let most = 0;
  const position = new Int32Array(b.chunkCount).map((_, i) => b.chunkCount - i); // stored order: the table's, reversed
  const siblings = new SiblingPrefetch(b, {
    has: (index) => cached.has(index),
    fetch: (wanted: WantedChunk[]) => {
      batches.push(wanted.map((w) => w.record.storedOffset));
      most = Math.max(most, ++inFlight);
      return new Promise<void>((resolve) =>
        pending.push(() => {
          inFlight--;
          resolve();
        }),
      );
    },
    storedPosition: () => position,
  });
  const settle = async () => {
    for (let i = 0; i < 1000 && pending.length > 0; i++) {
      pending.shift()!();
      await new Promise((r) => setTimeout(r, 0));
    }
  };
  return { siblings, cached, batches, settle, most: () => most };
}

describe("sibling prefetch", () => {
  test("starts at the second miss of one extension in one directory, and fetches the other such files not cached, in stored order", async () => {
    const names: [string, number][] = [...Array.from({ length: 6 }, (_, i) => [`m${i}.cpython-313.pyc`, 10 * KiB] as [string, number]), ["README.txt", KiB]];
    const { b, inodeOf } = image(names);
    const h = harness(b);
    const pyc = (i: number) => inodeOf(`/pkg/__pycache__/m${i}.cpython-313.pyc`);
    h.siblings.missed(pyc(0));
    h.siblings.missed(inodeOf("/other/x.pyc")); // another directory
    h.siblings.missed(inodeOf("/pkg/__pycache__/README.txt")); // another extension
    h.siblings.missed(inodeOf("/lib/big.so")); // too large to count
    expect(h.batches).toEqual([]);
    h.cached.add(b.chunkIndexes(pyc(0))[0]!).add(b.chunkIndexes(pyc(3))[0]!);
    h.siblings.missed(pyc(3));
    await h.settle();
    const offsetOf = (i: number) => b.chunk(b.chunkIndexes(pyc(i))[0]!).storedOffset;
    // Reversed table order is the stored order here; m0 and m3 are cached, README.txt is another kind.
    expect(h.batches.flat()).toEqual([5, 4, 2, 1].map(offsetOf));
    // A later miss in a group already started starts nothing more.
    h.siblings.missed(pyc(5));
    await h.settle();
    expect(h.batches.flat()).toHaveLength(4);
  });

  test("sends one batch of at most 128 KiB at a time, skips what was fetched meanwhile, and stops at 2 MiB per group", async () => {
    const { b, inodeOf } = image(Array.from({ length: 120 }, (_, i) => [`m${i}.pyc`, 60 * KiB] as [string, number]));
    const h = harness(b);
    h.siblings.missed(inodeOf("/pkg/__pycache__/m0.pyc"));
    h.siblings.missed(inodeOf("/pkg/__pycache__/m1.pyc"));
    expect(h.batches).toHaveLength(1); // the next waits for this one
    // Fetched by a read meanwhile: not asked for again.
    const skipped = b.chunkIndexes(inodeOf("/pkg/__pycache__/m100.pyc"))[0]!;
    h.cached.add(skipped);
    await h.settle();
    expect(h.most()).toBe(1);
    for (const batch of h.batches) expect(batch.length * 60 * KiB).toBeLessThanOrEqual(128 * KiB);
    const fetched = h.batches.flat();
    expect(fetched).not.toContain(b.chunk(skipped).storedOffset);
    expect(new Set(fetched).size).toBe(fetched.length);
    expect(fetched.length * 60 * KiB).toBeLessThanOrEqual(2 * 1024 * KiB);
    expect(fetched.length).toBeGreaterThan(30);
  });
});
