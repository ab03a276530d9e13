// DIR/image.json: what `skiff convert` wrote into DIR, so `inspect` and `extract` can find it.

export const IMAGE_JSON = "image.json";

export interface ImageJson {
  /** The source as given, with the digest it resolved to. */
  reference: string;
  /** Digest of the platform manifest the bootstrap was built from. */
  manifest: string;
  platform: string;
  /** Conversion parameters, e.g. `v1-c20-none`. */
  params: string;
  /** Store key (relative to DIR) of the image bootstrap. */
  bootstrap: string;
  layers: { digest: string; data: string; bootstrap: string }[];
}
