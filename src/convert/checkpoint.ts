// Where a layer conversion that proceeds in steps stopped. A step always stops at a chunk boundary,
// so the state is just the chunk table so far: the unique chunk records in the order they were
// stored, and for every chunk cut from the layer (duplicates included, in layer order) the record it
// became. The next step replays the layer up to that ordinal without hashing or storing anything.
// No decompressor state is kept: neither node:zlib nor fflate can save it.
//
// Encoding (little-endian):
//   "SKCK" | u32 version = 1 | u32 header length | header JSON
//   records × 64 bytes: sha256[32] storedOffset f64 storedSize u32 size u32 uncompressedOffset f64 compressed u8 pad[7]
//   ordinals × u32: the record index of each chunk cut so far
import { ChunkTable } from "../format/tree-table.ts";

export interface Checkpoint {
  /** `sha256:…` of the layer, and the conversion parameters id: a checkpoint is for one conversion only. */
  layer: string;
  params: string;
  /** Unique chunks stored so far, in storage order (in columns: a layer may have hundreds of thousands). */
  chunks: ChunkTable;
  /** For each chunk cut so far (its ordinal), the index of its record. */
  ordinals: Uint32Array;
  /** The data segments committed so far, one per step; together they are the data blob's first bytes. */
  segments: Segment[];
}

/** What one step stored: from the chunk ordinal where it began, `size` bytes. */
export interface Segment {
  from: number;
  size: number;
}

const MAGIC = [0x53, 0x4b, 0x43, 0x4b]; // "SKCK"
const VERSION = 1;
const RECORD_BYTES = 64;

export class CheckpointError extends Error {}

export function encodeCheckpoint(cp: Checkpoint): Uint8Array {
  const { chunks } = cp;
  const header = new TextEncoder().encode(JSON.stringify({ layer: cp.layer, params: cp.params, records: chunks.count, ordinals: cp.ordinals.length, segments: cp.segments }));
  const size = 12 + header.byteLength + chunks.count * RECORD_BYTES + cp.ordinals.length * 4;
  const out = new Uint8Array(size);
  const view = new DataView(out.buffer);
  out.set(MAGIC, 0);
  view.setUint32(4, VERSION, true);
  view.setUint32(8, header.byteLength, true);
  out.set(header, 12);
  let at = 12 + header.byteLength;
  let storedOffset = 0;
  let uncompressedOffset = 0;
  for (let i = 0; i < chunks.count; i++) {
    const [page, from] = chunks.digest(i);
    out.set(page.subarray(from, from + 32), at);
    view.setFloat64(at + 32, storedOffset, true);
    view.setUint32(at + 40, chunks.storedSize(i), true);
    view.setUint32(at + 44, chunks.size(i), true);
    view.setFloat64(at + 48, uncompressedOffset, true);
    out[at + 56] = chunks.compressed(i) ? 1 : 0;
    storedOffset += chunks.storedSize(i);
    uncompressedOffset += chunks.size(i);
    at += RECORD_BYTES;
  }
  for (const i of cp.ordinals) {
    view.setUint32(at, i, true);
    at += 4;
  }
  return out;
}

/** Decodes and checks a checkpoint; anything inconsistent is a CheckpointError (the caller starts over). */
export function decodeCheckpoint(bytes: Uint8Array): Checkpoint {
  const fail = (why: string): never => {
    throw new CheckpointError(`unusable conversion checkpoint: ${why}`);
  };
  if (bytes.byteLength < 12 || MAGIC.some((b, i) => bytes[i] !== b)) fail("bad magic");
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (view.getUint32(4, true) !== VERSION) fail(`version ${view.getUint32(4, true)}`);
  const headerLength = view.getUint32(8, true);
  if (12 + headerLength > bytes.byteLength) fail("truncated header");
  let header: { layer?: unknown; params?: unknown; records?: unknown; ordinals?: unknown; segments?: unknown };
  try {
    header = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(12, 12 + headerLength)));
  } catch {
    return fail("header is not JSON");
  }
  const count = (v: unknown) => (Number.isSafeInteger(v) && (v as number) >= 0 ? (v as number) : fail("bad count"));
  if (typeof header.layer !== "string" || typeof header.params !== "string") fail("no layer or params");
  const nRecords = count(header.records);
  const nOrdinals = count(header.ordinals);
  const segments: Segment[] = Array.isArray(header.segments) ? header.segments.map((s: { from?: unknown; size?: unknown }) => ({ from: count(s?.from), size: count(s?.size) })) : fail("no segments");
  // Every step cuts at least one chunk, so steps begin at increasing ordinals, the first at 0.
  segments.forEach((s, i) => {
    if (i === 0 ? s.from !== 0 : s.from <= segments[i - 1]!.from || s.from >= nOrdinals) fail("segments out of order");
  });
  if (bytes.byteLength !== 12 + headerLength + nRecords * RECORD_BYTES + nOrdinals * 4) fail("wrong length");

  const chunks = new ChunkTable();
  let at = 12 + headerLength;
  for (let i = 0; i < nRecords; i++, at += RECORD_BYTES) {
    const r = {
      digest: bytes.subarray(at, at + 32),
      storedOffset: view.getFloat64(at + 32, true),
      storedSize: view.getUint32(at + 40, true),
      size: view.getUint32(at + 44, true),
      uncompressedOffset: view.getFloat64(at + 48, true),
      compressed: bytes[at + 56] === 1,
    };
    // Records are laid end to end in both address spaces, exactly as the converter stores them.
    if (r.storedOffset !== chunks.storedEnd || r.uncompressedOffset !== chunks.uncompressedEnd || r.size === 0) fail(`record ${i} out of place`);
    if (chunks.find(r.digest) !== -1) fail(`record ${i} repeats a chunk`);
    chunks.add(r);
  }
  if (segments.reduce((sum, s) => sum + s.size, 0) !== chunks.storedEnd) fail("segments do not add up to the stored chunks");
  // A record first appears at the ordinal where it was stored, so every ordinal names a record
  // already stored or the next one.
  const ordinals = new Uint32Array(nOrdinals);
  let seen = 0;
  for (let i = 0; i < nOrdinals; i++, at += 4) {
    const index = view.getUint32(at, true);
    if (index > seen || index >= nRecords) fail(`ordinal ${i} names record ${index} before it exists`);
    if (index === seen) seen++;
    ordinals[i] = index;
  }
  if (seen !== nRecords) fail("records that no chunk uses");
  return { layer: header.layer as string, params: header.params as string, chunks, ordinals, segments };
}
