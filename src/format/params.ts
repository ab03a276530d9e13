// What a conversion's output depends on besides its source: together they name the result.
import { DEFAULT_CHUNK_SHIFT, FORMAT_VERSION, MAX_CHUNK_SHIFT, MIN_CHUNK_SHIFT } from "./layout.ts";
import { CHUNK_CODECS, type ChunkCodec } from "./chunk-codec.ts";

export interface ConvertParams {
  /** log2 of the chunk size: 16 (64 KiB) to 24 (16 MiB). */
  chunkShift: number;
  codec: ChunkCodec;
}

export const DEFAULT_PARAMS: ConvertParams = { chunkShift: DEFAULT_CHUNK_SHIFT, codec: "none" };

/** A store key segment such as `v1-c20-none`. */
export function paramsId(p: ConvertParams): string {
  return `v${FORMAT_VERSION}-c${p.chunkShift}-${p.codec}`;
}

/** Parses a chunk size such as `1m`, `64k`, `4194304`; it must be a power of two in range. */
export function parseChunkSize(text: string): number {
  const m = /^(\d+)\s*([kKmM]?)(?:i?[bB])?$/.exec(text.trim());
  if (!m) throw new Error(`invalid chunk size ${JSON.stringify(text)}`);
  const bytes = Number(m[1]) * (m[2]?.toLowerCase() === "k" ? 1024 : m[2]?.toLowerCase() === "m" ? 1024 * 1024 : 1);
  const shift = Math.log2(bytes);
  if (!Number.isInteger(shift) || shift < MIN_CHUNK_SHIFT || shift > MAX_CHUNK_SHIFT) {
    throw new Error(`chunk size must be a power of two from 64 KiB to 16 MiB, got ${JSON.stringify(text)}`);
  }
  return shift;
}

/** The inverse of paramsId for the current format version; null for anything else. */
export function parseParamsId(id: string): ConvertParams | null {
  const m = /^v(\d+)-c(\d+)-([a-z0-9-]+)$/.exec(id);
  if (!m || Number(m[1]) !== FORMAT_VERSION) return null;
  const chunkShift = Number(m[2]);
  const codec = CHUNK_CODECS.find((c) => c === m[3]);
  if (!codec || chunkShift < MIN_CHUNK_SHIFT || chunkShift > MAX_CHUNK_SHIFT) return null;
  return { chunkShift, codec };
}
