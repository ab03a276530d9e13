// Learned prefetch: nodes report the chunks their containers read first, in order; the edge keeps
// the last few reports per repository, image and parameters, merges them and serves the merged list
// (docs/api.md, "Learned prefetch"), so every later node prefetches those chunks first.
//
// A report is kept as indexes into the image bootstrap's chunk table: a digest that is not a chunk
// of the image is dropped, never stored, so a node can only reorder the image's own chunks. What is
// stored per image is bounded: MAX_REPORTS reports of at most one entry per chunk, and the merged
// list of at most MAX_MERGED digests, in one object (so a reader never sees the reports of one write
// with the list of another). Writes of one key are serialized in the process; where the store offers
// compare-and-swap (R2) concurrent writers in other processes retry on a changed version, elsewhere
// (one process per store) the last writer wins.
import type { Bootstrap } from "../format/decode.ts";
import { MAX_REPORT_DIGESTS } from "../format/prefetch-list.ts";
import { toHex } from "../hash/hasher.ts";
import { OciError } from "../oci/errors.ts";
import type { Digest } from "../oci/reference.ts";
import { learnedReadsKey } from "../store/keys.ts";
import { paramsId, parseParamsId } from "../format/params.ts";
import { getBytes, putBytes, type ContentStore } from "../store/store.ts";
import { StreamTooLarge } from "../util/streams.ts";

/** Reports kept per image: the newest, so the list follows the image's current workload. */
export const MAX_REPORTS = 8;
/** Where a chunk that a report lacks counts as read, on the scale where a report runs from 0 to 1. */
export const ABSENT_POSITION = 1.5;
/** The longest merged list kept and served. */
export const MAX_MERGED = MAX_REPORT_DIGESTS;
/** Attempts at a compare-and-swap write before the report is refused as too contended. */
const CAS_ATTEMPTS = 8;

/**
 * The chunks of `reports` (each a list of chunk indexes in first-read order), best first: by their
 * mean position over all reports, each report's positions scaled to 0..1 and a chunk missing from a
 * report counted at ABSENT_POSITION, so one odd report can't put its chunks first once there are
 * several. Ties go to the chunk more reports have, then to the lower index. A chunk repeated within a
 * report counts at its first position, and positions are among the report's distinct chunks.
 */
export function mergeReports(reports: readonly ArrayLike<number>[]): number[] {
  const sum = new Map<number, number>();
  const seen = new Map<number, number>();
  for (const report of reports) {
    const distinct = [...new Set(Array.from(report))];
    const span = Math.max(1, distinct.length - 1);
    distinct.forEach((chunk, i) => {
      sum.set(chunk, (sum.get(chunk) ?? 0) + i / span);
      seen.set(chunk, (seen.get(chunk) ?? 0) + 1);
    });
  }
  const score = new Map<number, number>();
  for (const [chunk, total] of sum) score.set(chunk, total + (reports.length - seen.get(chunk)!) * ABSENT_POSITION);
  return [...score.keys()].sort((a, b) => score.get(a)! - score.get(b)! || seen.get(b)! - seen.get(a)! || a - b);
}

/** A report as chunk indexes of `bootstrap`, first reads first (repeats dropped), and how many digests were not its chunks. */
export function reportedChunks(bootstrap: Pick<Bootstrap, "chunkIndexOf">, hexDigests: readonly string[]): { chunks: number[]; foreign: number } {
  const chunks: number[] = [];
  const taken = new Set<number>();
  let foreign = 0;
  for (const hex of hexDigests) {
    const index = bootstrap.chunkIndexOf(hex);
    if (index === null) foreign++;
    else if (!taken.has(index)) {
      taken.add(index);
      chunks.push(index);
    }
  }
  return { chunks, foreign };
}

// ---- the stored record ---------------------------------------------------------------------------
//
// Little-endian: "SKLR", u32 version 1, u32 chunk count of the bootstrap, u32 report count R, u32
// merged count M, R × u32 report lengths, the reports' u32 chunk indexes one after another, then M
// merged chunk digests of 32 bytes each.

const MAGIC = [0x53, 0x4b, 0x4c, 0x52];
const VERSION = 1;
const HEADER_BYTES = 20;
/** The largest record: MAX_REPORTS full reports and a full merged list, with room to spare. */
const MAX_RECORD_BYTES = HEADER_BYTES + MAX_REPORTS * 4 * (1 + MAX_REPORT_DIGESTS) + MAX_MERGED * 32 + 4096;

export interface LearnedRecord {
  /** Chunks in the image bootstrap the indexes refer to. */
  chunkCount: number;
  reports: Uint32Array[];
  /** The merged list: chunk digests, 32 bytes each, best first. */
  merged: Uint8Array;
}

export function encodeRecord(record: LearnedRecord): Uint8Array {
  const indexes = record.reports.reduce((n, r) => n + r.length, 0);
  const bytes = new Uint8Array(HEADER_BYTES + 4 * (record.reports.length + indexes) + record.merged.byteLength);
  const view = new DataView(bytes.buffer);
  bytes.set(MAGIC, 0);
  view.setUint32(4, VERSION, true);
  view.setUint32(8, record.chunkCount, true);
  view.setUint32(12, record.reports.length, true);
  view.setUint32(16, record.merged.byteLength / 32, true);
  let at = HEADER_BYTES;
  for (const r of record.reports) {
    view.setUint32(at, r.length, true);
    at += 4;
  }
  for (const r of record.reports) {
    for (const index of r) {
      view.setUint32(at, index, true);
      at += 4;
    }
  }
  bytes.set(record.merged, at);
  return bytes;
}

/** The record in `bytes`, or null for anything that is not a whole, consistent one (never trusted, treated as absent). */
export function decodeRecord(bytes: Uint8Array): LearnedRecord | null {
  if (bytes.byteLength < HEADER_BYTES || MAGIC.some((b, i) => bytes[i] !== b)) return null;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const u32 = (at: number) => view.getUint32(at, true);
  const [version, chunkCount, reportCount, mergedCount] = [u32(4), u32(8), u32(12), u32(16)];
  if (version !== VERSION || reportCount > MAX_REPORTS || mergedCount > MAX_MERGED) return null;
  if (bytes.byteLength < HEADER_BYTES + 4 * reportCount) return null;
  const lengths = Array.from({ length: reportCount }, (_, i) => u32(HEADER_BYTES + 4 * i));
  let at = HEADER_BYTES + 4 * reportCount;
  const total = lengths.reduce((n, l) => n + l, 0);
  if (lengths.some((l) => l > chunkCount) || bytes.byteLength !== at + 4 * total + 32 * mergedCount) return null;
  const reports: Uint32Array[] = [];
  for (const length of lengths) {
    const report = new Uint32Array(length);
    for (let i = 0; i < length; i++, at += 4) {
      report[i] = u32(at);
      if (report[i]! >= chunkCount) return null;
    }
    reports.push(report);
  }
  return { chunkCount, reports, merged: bytes.slice(at) };
}

// ---- storage -------------------------------------------------------------------------------------

/** Where one image's reports are kept: the repository id (its upstream included), the platform manifest and the params. */
export interface LearnedImage {
  repository: string;
  manifest: Digest;
  params: string;
}

/**
 * The image's record. A chunk's digest and its index in the image's chunk table depend on the chunk
 * size, not the codec, so the nodes that read an image with either codec (an early `none` answer,
 * then deflate-raw) learn one list.
 */
function keyOf(image: LearnedImage): string {
  const params = parseParamsId(image.params);
  return learnedReadsKey(image.repository, image.manifest, params ? paramsId({ ...params, codec: "none" }) : image.params);
}

export class LearnedReads {
  readonly #store: ContentStore;
  readonly #maxReports: number;
  /** The write in progress per key in this process; the next one starts after it. */
  readonly #writing = new Map<string, Promise<unknown>>();

  constructor(store: ContentStore, maxReports = MAX_REPORTS) {
    this.#store = store;
    this.#maxReports = maxReports;
  }

  /**
   * Adds a report (chunk indexes of `bootstrap`, first reads first, from reportedChunks) as the
   * newest of the image's, dropping the oldest past the bound, and stores the new merged list.
   */
  report(image: LearnedImage, bootstrap: Bootstrap, chunks: readonly number[]): Promise<void> {
    const key = keyOf(image);
    const report = Uint32Array.from(chunks.slice(0, Math.min(bootstrap.chunkCount, MAX_REPORT_DIGESTS)));
    const previous = this.#writing.get(key) ?? Promise.resolve();
    const write = previous.catch(() => {}).then(() => this.#add(key, bootstrap, report));
    this.#writing.set(key, write);
    const done = () => {
      if (this.#writing.get(key) === write) this.#writing.delete(key);
    };
    write.then(done, done);
    return write;
  }

  /** The merged list (hex digests, best first), or null when nothing has been learned for the image. */
  async list(image: LearnedImage): Promise<string[] | null> {
    const bytes = await this.#read(keyOf(image));
    const record = bytes && decodeRecord(bytes);
    if (!record || record.merged.byteLength === 0) return null;
    return Array.from({ length: record.merged.byteLength / 32 }, (_, i) => toHex(record.merged.subarray(32 * i, 32 * i + 32)));
  }

  async #add(key: string, bootstrap: Bootstrap, report: Uint32Array): Promise<void> {
    const store = this.#store;
    const cas = store.getVersioned && store.putIfVersion ? { get: store.getVersioned.bind(store), put: store.putIfVersion.bind(store) } : null;
    for (let attempt = 0; attempt < CAS_ATTEMPTS; attempt++) {
      const current = cas ? await cas.get(key) : await this.#read(key).then((bytes) => bytes && { bytes, version: null });
      const next = encodeRecord(this.#merged(current && decodeRecord(current.bytes), bootstrap, report));
      if (!cas) return putBytes(store, key, next);
      if ((await cas.put(key, next, current?.version ?? null)) !== null) return;
    }
    throw new OciError("UNAVAILABLE", "too many concurrent reports for this image: try again", { status: 503, headers: { "Retry-After": "1" } });
  }

  /** A record's bytes; one too large to be a record counts as absent. */
  #read(key: string): Promise<Uint8Array | null> {
    return getBytes(this.#store, key, MAX_RECORD_BYTES).catch((err: unknown) => {
      if (err instanceof StreamTooLarge) return null;
      throw err;
    });
  }

  /** The record with `report` added: reports of another bootstrap (another chunk table) are dropped. */
  #merged(previous: LearnedRecord | null, bootstrap: Bootstrap, report: Uint32Array): LearnedRecord {
    const kept = previous?.chunkCount === bootstrap.chunkCount ? previous.reports : [];
    const reports = [...kept, report].slice(-this.#maxReports);
    const order = mergeReports(reports).slice(0, MAX_MERGED);
    const merged = new Uint8Array(32 * order.length);
    order.forEach((chunk, i) => merged.set(bootstrap.chunk(chunk).digest, 32 * i));
    return { chunkCount: bootstrap.chunkCount, reports, merged };
  }
}
