// The agent's deflate-raw chunk decoder: node:zlib inflates 1 MiB chunks about three times as fast
// as fflate here (docs/benchmarks.md, "Chunk decode"), and a cold start inflates every chunk it reads.
import { constants, inflateRawSync } from "node:zlib";
import type { InflateRaw } from "../../src/format/chunk-codec.ts";

/**
 * Inflates into one output buffer of the expected size plus a byte (at least zlib's default 16
 * KiB). With the default alone, a larger chunk comes out in 16 KiB buffers joined at the end: a
 * copy of every byte, a quarter to a third slower from 64 KiB up (docs/benchmarks.md).
 * It stops one byte past the expected size, so an over-long chunk is refused without inflating all
 * of it: zlib then throws, and the answer is a buffer one byte too long, as fflate's would be.
 */
export const zlibInflateRaw: InflateRaw = (stored, expectedSize) => {
  try {
    return inflateRawSync(stored, { maxOutputLength: expectedSize + 1, chunkSize: Math.max(constants.Z_DEFAULT_CHUNK, expectedSize + 1) });
  } catch (err) {
    if ((err as { code?: string }).code === "ERR_BUFFER_TOO_LARGE") return new Uint8Array(expectedSize + 1);
    throw err;
  }
};
