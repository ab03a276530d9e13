// Chunk digests are compared as lowercase hex: the cache's file names and the fetcher's map keys.
import { createHash } from "node:crypto";

export const HEX_DIGEST = /^[0-9a-f]{64}$/;

export function sha256Hex(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

export function toHex(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("hex");
}
