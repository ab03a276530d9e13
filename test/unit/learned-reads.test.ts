// Learned prefetch on the edge: the merge of nodes' reports (order by mean scaled position, absent
// chunks counted late, the bound on reports), the stored record (round trip, anything damaged read
// as absent), storage in the memory store (foreign digests never stored, storage bounded, writes
// from many reports at once all counted), and the prefetch list text the route takes.
import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import { Bootstrap } from "../../src/format/decode.ts";
import { encodeBootstrap } from "../../src/format/encode.ts";
import { baseNode, newDir, type BootstrapModel } from "../../src/format/model.ts";
import { digestsThatFit, formatPrefetchList, MAX_REPORT_BYTES, MAX_REPORT_DIGESTS, parsePrefetchList, PrefetchListError, PREFETCH_LIST_HEADER } from "../../src/format/prefetch-list.ts";
import { toHex } from "../../src/hash/hasher.ts";
import { ABSENT_POSITION, decodeRecord, encodeRecord, LearnedReads, MAX_REPORTS, mergeReports, reportedChunks, type LearnedImage } from "../../src/lazy/learned-reads.ts";
import { parseDigest } from "../../src/oci/reference.ts";
import { learnedReadsKey } from "../../src/store/keys.ts";
import { MemoryStore } from "../../src/store/memory.ts";
import { getBytes, putBytes } from "../../src/store/store.ts";

const sha = (s: string) => createHash("sha256").update(s).digest();

/** An image bootstrap of `n` chunks (digests of "chunk 0", "chunk 1", …), a file each. */
function imageOf(n: number): Bootstrap {
  const chunks = Array.from({ length: n }, (_, i) => ({ digest: sha(`chunk ${i}`), blob: 0, compressed: false, storedOffset: 10 * i, storedSize: 10, size: 10, uncompressedOffset: 10 * i }));
  const root = newDir();
  chunks.forEach((_, i) => root.children!.set(`f${i}`, { ...baseNode("file", 0o644), chunks: [i], size: 10 }));
  const model: BootstrapModel = { kind: "image", codec: 0, chunkShift: 16, platform: "linux/amd64", blobs: [{ dataDigest: sha("data"), storedSize: 10 * n, layerDigest: `sha256:${"1".repeat(64)}` }], chunks, root };
  return Bootstrap.decode(encodeBootstrap(model));
}
const hexOf = (b: Bootstrap, i: number) => toHex(b.chunk(i).digest);
const IMAGE: LearnedImage = { repository: "local/team-a/app", manifest: parseDigest(`sha256:${"ab".repeat(32)}`)!, params: "v1-c16-none" };

describe("mergeReports", () => {
  it("one report is its own order", () => {
    expect(mergeReports([[5, 2, 9, 0]])).toEqual([5, 2, 9, 0]);
  });

  it("orders by mean scaled position: a chunk read early everywhere beats one read first once", () => {
    // Chunk 7 is first in one of three reports and absent from the others: (0 + 2 × 1.5) / 3 = 1.0;
    // chunk 1 is last in all three: 1.0 each, so it ties with 7 and wins on being in more reports.
    const merged = mergeReports([
      [7, 0, 1],
      [0, 2, 1],
      [2, 0, 1],
    ]);
    expect(merged).toEqual([0, 2, 1, 7]);
  });

  it("counts a chunk absent from a report at ABSENT_POSITION, so one odd report does not dominate", () => {
    expect(ABSENT_POSITION).toBe(1.5);
    const usual = [10, 11, 12, 13];
    const odd = [99, 98, 13];
    const merged = mergeReports([usual, usual, usual, odd]);
    expect(merged.slice(0, 4)).toEqual([10, 11, 12, 13]);
    expect(merged.slice(4)).toEqual([99, 98]);
    // With only the odd report and one usual one, the odd one's first chunk ties with the usual one's.
    expect(mergeReports([odd, usual]).slice(0, 2)).toEqual([10, 99]);
  });

  it("a chunk repeated within a report counts once, at its first position", () => {
    expect(mergeReports([[3, 4, 3, 3, 5]])).toEqual([3, 4, 5]);
    expect(mergeReports([[3, 4, 3], [4, 3]])).toEqual([3, 4]);
  });

  it("is deterministic on ties (lower index first)", () => {
    expect(mergeReports([[2], [1]])).toEqual([1, 2]);
    expect(mergeReports([])).toEqual([]);
  });
});

describe("reportedChunks", () => {
  it("maps digests to the image's chunk indexes, drops foreign ones and repeats", () => {
    const image = imageOf(4);
    const foreign = "f".repeat(64);
    expect(reportedChunks(image, [hexOf(image, 2), foreign, hexOf(image, 0), hexOf(image, 2), foreign])).toEqual({ chunks: [2, 0], foreign: 2 });
  });
});

describe("the stored record", () => {
  const record = { chunkCount: 10, reports: [Uint32Array.of(3, 1), Uint32Array.of(9)], merged: new Uint8Array(64).fill(7) };

  it("round-trips", () => {
    expect(decodeRecord(encodeRecord(record))).toEqual(record);
  });

  it("anything damaged is read as absent: magic, version, lengths, an index past the chunk table, a cut", () => {
    const bytes = encodeRecord(record);
    const damaged = (at: number, value: number) => {
      const copy = bytes.slice();
      new DataView(copy.buffer).setUint32(at, value, true);
      return decodeRecord(copy);
    };
    expect(damaged(0, 0)).toBeNull();
    expect(damaged(4, 2)).toBeNull();
    expect(damaged(12, MAX_REPORTS + 1)).toBeNull();
    expect(damaged(20, 3)).toBeNull(); // a report length that doesn't match the bytes
    expect(damaged(28, 10)).toBeNull(); // index 10 of 10 chunks
    expect(decodeRecord(bytes.subarray(0, bytes.length - 1))).toBeNull();
    expect(decodeRecord(new Uint8Array(3))).toBeNull();
  });
});

describe("LearnedReads over a store", () => {
  it("stores a report, serves the merged list as hex digests, keyed by repository", async () => {
    const store = new MemoryStore();
    const learned = new LearnedReads(store);
    const image = imageOf(6);
    await learned.report(IMAGE, image, [4, 1, 5]);
    expect(await learned.list(IMAGE)).toEqual([4, 1, 5].map((i) => hexOf(image, i)));
    expect(await learned.list({ ...IMAGE, repository: "local/team-b/app" })).toBeNull();
    expect(await learned.list({ ...IMAGE, params: "v1-c20-none" })).toBeNull();
    expect(store.keys()).toEqual([learnedReadsKey(IMAGE.repository, IMAGE.manifest, IMAGE.params)]);
  });

  it("one list per chunk size: the codec does not change a chunk's digest or index", async () => {
    const store = new MemoryStore();
    const learned = new LearnedReads(store);
    const image = imageOf(6);
    await learned.report(IMAGE, image, [3, 2]);
    await learned.report({ ...IMAGE, params: "v1-c16-deflate-raw" }, image, [3, 2]);
    const both = [3, 2].map((i) => hexOf(image, i));
    expect(await learned.list({ ...IMAGE, params: "v1-c16-deflate-raw" })).toEqual(both);
    expect(await learned.list(IMAGE)).toEqual(both);
    expect(store.keys()).toEqual([learnedReadsKey(IMAGE.repository, IMAGE.manifest, "v1-c16-none")]);
  });

  it("keeps only the newest MAX_REPORTS reports: the oldest stops counting", async () => {
    const store = new MemoryStore();
    const learned = new LearnedReads(store);
    const image = imageOf(20);
    await learned.report(IMAGE, image, [19]); // the oldest: only it has chunk 19
    for (let i = 0; i < MAX_REPORTS; i++) await learned.report(IMAGE, image, [i, 10]);
    const list = await learned.list(IMAGE);
    expect(list).not.toContain(hexOf(image, 19));
    expect(list![0]).toBe(hexOf(image, 10));
    const record = decodeRecord((await getBytes(store, learnedReadsKey(IMAGE.repository, IMAGE.manifest, IMAGE.params)))!)!;
    expect(record.reports.length).toBe(MAX_REPORTS);
  });

  it("storage is bounded: a report is cut at the image's chunk count", async () => {
    const store = new MemoryStore();
    const image = imageOf(3);
    await new LearnedReads(store).report(IMAGE, image, [0, 1, 2, 0, 1, 2, 0, 1, 2]);
    const bytes = (await getBytes(store, learnedReadsKey(IMAGE.repository, IMAGE.manifest, IMAGE.params)))!;
    expect(decodeRecord(bytes)!.reports[0]!.length).toBe(3);
  });

  it("reports of another chunk table (a record that does not fit the image) are dropped, a damaged record is replaced", async () => {
    const store = new MemoryStore();
    const learned = new LearnedReads(store);
    await learned.report(IMAGE, imageOf(8), [7, 6]);
    const image = imageOf(4);
    await learned.report(IMAGE, image, [2]);
    expect(await learned.list(IMAGE)).toEqual([hexOf(image, 2)]);
    await putBytes(store, learnedReadsKey(IMAGE.repository, IMAGE.manifest, IMAGE.params), new Uint8Array([1, 2, 3]));
    expect(await learned.list(IMAGE)).toBeNull();
    await learned.report(IMAGE, image, [3]);
    expect(await learned.list(IMAGE)).toEqual([hexOf(image, 3)]);
  });

  it("reports sent at once are all counted (writes of one image are serialized)", async () => {
    const store = new MemoryStore();
    const learned = new LearnedReads(store);
    const image = imageOf(10);
    await Promise.all(Array.from({ length: 6 }, (_, i) => learned.report(IMAGE, image, [i])));
    const record = decodeRecord((await getBytes(store, learnedReadsKey(IMAGE.repository, IMAGE.manifest, IMAGE.params)))!)!;
    expect(record.reports.map((r) => [...r]).sort()).toEqual([[0], [1], [2], [3], [4], [5]]);
  });

  it("with compare-and-swap, a write that lost the race to another process is redone over the other's record", async () => {
    const store = new MemoryStore();
    const image = imageOf(10);
    const a = new LearnedReads(store);
    const b = new LearnedReads(store); // another process sharing the store (R2)
    const putIfVersion = store.putIfVersion.bind(store);
    let raced = false;
    store.putIfVersion = async (key, bytes, expected) => {
      if (!raced) {
        raced = true;
        await b.report(IMAGE, image, [9]); // lands between a's read and a's write
      }
      return putIfVersion(key, bytes, expected);
    };
    await a.report(IMAGE, image, [1]);
    const list = await a.list(IMAGE);
    expect(new Set(list)).toEqual(new Set([hexOf(image, 1), hexOf(image, 9)]));
  });
});

describe("prefetch list text", () => {
  const d = (c: string) => c.repeat(64);

  it("parses digests in order; comments, blank lines and \\r are not digests", () => {
    expect(parsePrefetchList(`${PREFETCH_LIST_HEADER}\r\n# recorded on node-1\n${d("a")}\r\n\n${d("b")}\n${d("a")}`)).toEqual([d("a"), d("b"), d("a")]);
    expect(parsePrefetchList(`${PREFETCH_LIST_HEADER}\n`)).toEqual([]);
    expect(parsePrefetchList(formatPrefetchList([d("c"), d("0")]))).toEqual([d("c"), d("0")]);
  });

  it("refuses a missing header, upper case, a prefix, short digests, other text", () => {
    for (const bad of ["", `${d("a")}\n`, `# skiff prefetch list v2\n${d("a")}`, `${PREFETCH_LIST_HEADER}\n${d("A")}`, `${PREFETCH_LIST_HEADER}\nsha256:${d("a")}`, `${PREFETCH_LIST_HEADER}\n${"a".repeat(63)}`, `${PREFETCH_LIST_HEADER}\nhello`]) {
      expect(() => parsePrefetchList(bad), JSON.stringify(bad.slice(0, 40))).toThrow(PrefetchListError);
    }
  });

  it("refuses past maxDigests as too many", () => {
    const text = formatPrefetchList(Array(5).fill(d("e")));
    expect(parsePrefetchList(text, 5)).toHaveLength(5);
    let err: unknown;
    try {
      parsePrefetchList(text, 4);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(PrefetchListError);
    expect((err as PrefetchListError).tooMany).toBe(true);
  });

  it("digestsThatFit keeps a list within both limits", () => {
    expect(MAX_REPORT_DIGESTS).toBe(65_536);
    expect(MAX_REPORT_BYTES).toBe(4 * 2 ** 20);
    expect(digestsThatFit(10)).toBe(10);
    const most = digestsThatFit(1_000_000);
    expect(formatPrefetchList(Array(most).fill(d("1"))).length).toBeLessThanOrEqual(MAX_REPORT_BYTES);
    expect(formatPrefetchList(Array(most + 1).fill(d("1"))).length).toBeGreaterThan(MAX_REPORT_BYTES);
    expect(digestsThatFit(100_000, 1 << 30)).toBe(MAX_REPORT_DIGESTS);
  });
});
