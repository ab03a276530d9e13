// The names and ids of the per-chunk codecs and the decoder of a stored chunk, without a
// compressor: the node agent inflates with node:zlib, and a conversion to `none` encodes nothing,
// so neither loads fflate (codec.ts adds fflate's encoder and decoder, and re-exports all of this).
export type ChunkCodec = "none" | "deflate-raw";

export const CHUNK_CODECS: readonly ChunkCodec[] = ["none", "deflate-raw"];

/** Chunks are at most 16 MiB; a larger size claimed by a bootstrap is refused before allocating. */
const MAX_CHUNK_SIZE = 16 * 1024 * 1024;

const IDS: Record<ChunkCodec, number> = { none: 0, "deflate-raw": 1 };

/**
 * The deflate level of every chunk; changing it changes every converted blob. Level 1 encodes
 * 2–2.6× faster than 6 on compressible data for 5–20% more stored bytes: conversion sits in front
 * of an image's first pull, and lazy fetching already saves far more transfer than the ratio
 * would (docs/benchmarks.md).
 */
export const DEFLATE_LEVEL = 1;

export function codecId(c: ChunkCodec): number {
  return IDS[c];
}

export function codecFromId(id: number): ChunkCodec | null {
  return CHUNK_CODECS.find((c) => IDS[c] === id) ?? null;
}

/**
 * Inflates one deflate-raw chunk whose size should be `expectedSize`; it may return more bytes (or
 * throw) for a chunk that decodes to more, so that an over-long chunk is never cut to size silently.
 */
export type InflateRaw = (stored: Uint8Array, expectedSize: number) => Uint8Array;

/**
 * The chunk's uncompressed bytes, checked against its expected size, inflated by `inflate` (fflate's
 * in codec.ts; the Node agent uses node:zlib); async so an asynchronous one could be put in too.
 */
export async function decodeChunkWith(codec: ChunkCodec, stored: Uint8Array, expectedSize: number, inflate: InflateRaw): Promise<Uint8Array> {
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
