// The per-chunk codec of converted data. Every chunk is compressed on its own so any one can be
// fetched by Range and decoded alone.
//
// Encoding must give the same bytes on every runtime (data blobs are content-addressed and a layer
// converts to the same blob on Node, Deno and Workers), so it is fflate at a fixed level rather than
// CompressionStream, whose output depends on the platform's zlib.
import { deflateSync, inflateSync } from "fflate";

export type ChunkCodec = "none" | "deflate-raw";

export const CHUNK_CODECS: readonly ChunkCodec[] = ["none", "deflate-raw"];

/**
 * The deflate level of every chunk; changing it changes every converted blob. Level 1 encodes
 * 2–2.6× faster than 6 on compressible data for 5–20% more stored bytes: conversion sits in front
 * of an image's first pull, and lazy fetching already saves far more transfer than the ratio
 * would (docs/benchmarks.md).
 */
export const DEFLATE_LEVEL = 1;

/** Chunks are at most 16 MiB; a larger size claimed by a bootstrap is refused before allocating. */
const MAX_CHUNK_SIZE = 16 * 1024 * 1024;

const IDS: Record<ChunkCodec, number> = { none: 0, "deflate-raw": 1 };

export function codecId(c: ChunkCodec): number {
  return IDS[c];
}

export function codecFromId(id: number): ChunkCodec | null {
  return CHUNK_CODECS.find((c) => IDS[c] === id) ?? null;
}

/** "none" returns `data` itself; deflate-raw returns new bytes. */
export function encodeChunk(codec: ChunkCodec, data: Uint8Array): Uint8Array {
  if (codec === "none") return data;
  return deflateSync(data, { level: DEFLATE_LEVEL });
}

/**
 * Inflates one deflate-raw chunk whose size should be `expectedSize`; it may return more bytes (or
 * throw) for a chunk that decodes to more, so that an over-long chunk is never cut to size silently.
 */
export type InflateRaw = (stored: Uint8Array, expectedSize: number) => Uint8Array;

/**
 * fflate's inflateSync rather than DecompressionStream("deflate-raw"): one chunk at a time it was
 * as fast or faster at 64 KiB to 4 MiB on Node, and steadier under load (docs/benchmarks.md).
 * One spare byte: fflate stops writing at the end of a given buffer, so an over-long chunk shows
 * up as a full buffer.
 */
export const fflateInflateRaw: InflateRaw = (stored, expectedSize) => inflateSync(stored, { out: new Uint8Array(expectedSize + 1) });

/**
 * The chunk's uncompressed bytes, checked against its expected size. `inflate` lets a runtime put a
 * faster decoder in (the Node agent uses node:zlib); async so an asynchronous one could too.
 */
export async function decodeChunk(codec: ChunkCodec, stored: Uint8Array, expectedSize: number, inflate: InflateRaw = fflateInflateRaw): Promise<Uint8Array> {
  if (!Number.isSafeInteger(expectedSize) || expectedSize < 0 || expectedSize > MAX_CHUNK_SIZE) {
    throw new RangeError(`chunk size ${expectedSize} is outside 0..${MAX_CHUNK_SIZE}`);
  }
  if (codec === "none") {
    if (stored.length !== expectedSize) throw new Error(`stored chunk is ${stored.length} bytes, expected ${expectedSize}`);
    return stored;
  }
  let out: Uint8Array;
  try {
    out = inflate(stored, expectedSize);
  } catch (err) {
    throw new Error(`deflate-raw chunk is corrupt: ${err instanceof Error ? err.message : String(err)}`);
  }
  if (out.length !== expectedSize) {
    const actual = out.length > expectedSize ? `more than ${expectedSize}` : String(out.length);
    throw new Error(`deflate-raw chunk decodes to ${actual} bytes, expected ${expectedSize}`);
  }
  return out;
}
