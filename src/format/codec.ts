// The per-chunk codec of converted data. Every chunk is compressed on its own so any one can be
// fetched by Range and decoded alone.
//
// Encoding must give the same bytes on every runtime (data blobs are content-addressed and a layer
// converts to the same blob on Node, Deno and Workers), so it is fflate at a fixed level rather than
// CompressionStream, whose output depends on the platform's zlib.
import { deflateSync, inflateSync } from "fflate";
import { decodeChunkWith, DEFLATE_LEVEL, type ChunkCodec, type InflateRaw } from "./chunk-codec.ts";

export { CHUNK_CODECS, codecFromId, codecId, DEFLATE_LEVEL, type ChunkCodec, type InflateRaw } from "./chunk-codec.ts";

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
