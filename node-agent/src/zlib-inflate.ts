// The agent's deflate-raw chunk decoder: node:zlib inflates 1 MiB chunks about three times as fast
// as fflate here (docs/benchmarks.md, "Chunk decode"), and a cold start inflates every chunk it reads.
import { inflateRawSync } from "node:zlib";
import type { InflateRaw } from "../../src/format/chunk-codec.ts";

/** zlib's smallest output buffer (Z_MIN_CHUNK). */
const MIN_OUTPUT = 64;

/**
 * Inflates into one output buffer of the expected size plus a byte. zlib's default is 16 KiB
 * buffers joined at the end: a copy of every byte, and half the speed for chunks under 64 KiB.
 * It stops one byte past the expected size, so an over-long chunk is refused without inflating all
 * of it: zlib then throws, and the answer is a buffer one byte too long, as fflate's would be.
 */
export const zlibInflateRaw: InflateRaw = (stored, expectedSize) => {
  try {
    return inflateRawSync(stored, { maxOutputLength: expectedSize + 1, chunkSize: Math.max(MIN_OUTPUT, expectedSize + 1) });
  } catch (err) {
    if ((err as { code?: string }).code === "ERR_BUFFER_TOO_LARGE") return new Uint8Array(expectedSize + 1);
    throw err;
  }
};
