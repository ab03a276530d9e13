// The per-chunk codec of converted data. Every chunk is compressed on its own so any one can be
// fetched by Range and decoded alone.
//
// Encoding must give the same bytes on every runtime (data blobs are content-addressed and a layer
// converts to the same blob on Node, Deno and Workers), so it is fflate at a fixed level rather than
// CompressionStream, whose output depends on the platform's zlib.
import { deflateSync, inflateSync } from "fflate";
import { decodeChunkWith, type ChunkCodec, type InflateRaw } from "./chunk-codec.ts";

export { CHUNK_CODECS, codecFromId, codecId, type ChunkCodec, type InflateRaw } from "./chunk-codec.ts";

/**
 * The deflate level of every chunk; changing it changes every converted blob. Level 1 encodes
 * 2–2.6× faster than 6 on compressible data for 5–20% more stored bytes: conversion sits in front
 * of an image's first pull, and lazy fetching already saves far more transfer than the ratio
 * would (docs/benchmarks.md).
 */
export const DEFLATE_LEVEL = 1;

/** "none" returns `data` itself; deflate-raw returns new bytes. */
export function encodeChunk(codec: ChunkCodec, data: Uint8Array): Uint8Array {
  if (codec === "none") return data;
  return deflateSync(data, { level: DEFLATE_LEVEL });
}

/**
 * fflate's inflateSync rather than DecompressionStream("deflate-raw"): one chunk at a time it was
 * as fast or faster at 64 KiB to 4 MiB on Node, and steadier under load (docs/benchmarks.md).
 * One spare byte: fflate stops writing at the end of a given buffer, so an over-long chunk shows
 * up as a full buffer.
 */
export const fflateInflateRaw: InflateRaw = (stored, expectedSize) => inflateSync(stored, { out: new Uint8Array(expectedSize + 1) });

/** The chunk's uncompressed bytes, checked against its expected size (chunk-codec.ts), by default inflated with fflate. */
export function decodeChunk(codec: ChunkCodec, stored: Uint8Array, expectedSize: number, inflate: InflateRaw = fflateInflateRaw): Promise<Uint8Array> {
  return decodeChunkWith(codec, stored, expectedSize, inflate);
}
