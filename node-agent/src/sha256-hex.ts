// Chunk digests are compared as lowercase hex (the cache's file names, the fetcher's map keys); this
// hashes natively, in one call (crypto.hash: no Hash object per chunk).
import { hash } from "node:crypto";

export const HEX_DIGEST = /^[0-9a-f]{64}$/;

export function sha256Hex(bytes: Uint8Array): string {
  return hash("sha256", bytes, "hex");
}
