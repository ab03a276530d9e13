// Incremental hashing behind one small interface. crypto.subtle.digest needs the whole buffer, so
// streaming verification of multi-gigabyte blobs uses an incremental hasher chosen per runtime.

export type HashAlgorithm = "sha256" | "sha512";

export interface Hasher {
  update(data: Uint8Array): void;
  /** Lowercase hex of the digest; the hasher must not be used afterwards. */
  hex(): string;
}

export type HasherFactory = ((algorithm: HashAlgorithm) => Hasher) & {
  /**
   * The hex digest of a whole buffer in one call, where the runtime has one: no hasher object per
   * buffer, which a layer of 100,000 small files would otherwise make 100,000 times.
   */
  digestHex?: (algorithm: HashAlgorithm, data: Uint8Array) => string;
};

/** Each byte's two hex digits: a table look-up per byte is several times faster than formatting it. */
const HEX_PAIRS = Array.from({ length: 256 }, (_, b) => b.toString(16).padStart(2, "0"));

export function toHex(bytes: Uint8Array): string {
  let out = "";
  for (let i = 0; i < bytes.length; i++) out += HEX_PAIRS[bytes[i]!]!;
  return out;
}

/** Each character code's value as a lowercase hex digit, or -1: a conversion looks up every chunk's digest. */
const HEX_VALUES = Int8Array.from({ length: 128 }, (_, c) => (c >= 48 && c <= 57 ? c - 48 : c >= 97 && c <= 102 ? c - 87 : -1));

/** The bytes of lowercase hex; anything else (odd length, uppercase, other characters) is refused. */
export function fromHex(hex: string): Uint8Array {
  if (hex.length % 2 !== 0) throw new Error("invalid hex");
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) {
    const high = HEX_VALUES[hex.charCodeAt(2 * i)] ?? -1;
    const low = HEX_VALUES[hex.charCodeAt(2 * i + 1)] ?? -1;
    if ((high | low) < 0) throw new Error("invalid hex");
    out[i] = (high << 4) | low;
  }
  return out;
}

/** Hashes a whole buffer with the given factory (chunks, manifests, small objects). */
export function hashBytes(factory: HasherFactory, algorithm: HashAlgorithm, data: Uint8Array): string {
  if (factory.digestHex) return factory.digestHex(algorithm, data);
  const h = factory(algorithm);
  h.update(data);
  return h.hex();
}
