// Converts an image: resolve the platform's manifest, convert each layer (or reuse its stored
// conversion), merge the layer bootstraps and publish the image bootstrap last.
import type { ChunkEncoder } from "./chunk-encoder.ts";
import { imageBootstrapKey } from "../store/keys.ts";
import { imageOfOneLayer } from "../format/encode.ts";
import { Bootstrap } from "../format/decode.ts";
import type { HasherFactory } from "../hash/hasher.ts";
import { getBytes, putBytes, type ContentStore } from "../store/store.ts";
import { LayerFormatError, type GunzipFactory, type UnzstdFactory } from "./decompress.ts";
import { CONVERSION_BASE_BYTES, convertLayer, type ConvertedLayer, type ConvertLayerOptions, type LayerSource, type StepBudget } from "./layer.ts";
import { SkippedEntries } from "./layer-tree.ts";
import { mergeLayers } from "./merge.ts";
import { paramsId, type ConvertParams } from "../format/params.ts";
import { resolveImage, type ImageSource, type ResolvedImage } from "./image-source.ts";

export interface ConvertImageOptions {
  store: ContentStore;
  hasher: HasherFactory;
  gunzip?: GunzipFactory;
  unzstd?: UnzstdFactory;
  /** Encodes the chunks (see ConvertLayerOptions). */
  chunkEncoder?: ChunkEncoder;
  params: ConvertParams;
  platform: string;
  /** The image as resolveImage found it for `platform`, when the caller resolved it already. */
  image?: ResolvedImage;
  /** Called before each layer with its index, and as compressed bytes are read. */
  onLayer?: (index: number, layer: ResolvedImage["layers"][number]) => void;
  onBytes?: (n: number) => void;
  /** Convert in resumable steps; shared by the layers (see ConvertLayerOptions). */
  budget?: StepBudget;
  /** Converts (or finds) one layer; the proxy passes a single-flight wrapper around convertLayer. */
  layerConverter?: (layer: LayerSource, opts: ConvertLayerOptions) => Promise<ConvertedLayer>;
  /**
   * Most inodes an image's layers may hold together when they have to be merged: the merge holds
   * the layers' bootstraps beside the image's (MERGE_BYTES_PER_ENTRY in all). No limit when
   * absent; a Worker sets it from its memory (mergeLimitForMemory).
   */
  maxMergedEntries?: number;
}

/**
 * What merging holds per inode of the layers at its peak, everything included: the layers'
 * bootstraps (about 140 bytes), the image's tree in columns (about 60), the image bootstrap (about
 * 175) and the encoder's arrays while it writes it (about 28). bench/merge-memory.mjs measured 309
 * to 322 bytes without those arrays, live, on two node_modules-like layers under different roots
 * (so the image holds every inode of both) of 112,641 to 337,927 inodes together; the rest is a
 * margin for garbage the merge makes as it goes. What workerd's heap samples show beside the live
 * figure is garbage the layers' conversions left, mostly array buffers V8 had not freed yet, and
 * it does not follow the merge's size (docs/reliability.md).
 */
export const MERGE_BYTES_PER_ENTRY = 450;

/** The most inodes an image merge fits into `memoryBytes` beside what a conversion holds anyway, in thousands. */
export function mergeLimitForMemory(memoryBytes: number): number {
  return Math.max(1000, Math.floor((memoryBytes - CONVERSION_BASE_BYTES) / MERGE_BYTES_PER_ENTRY / 1000) * 1000);
}

export interface ConvertedImage {
  image: ResolvedImage;
  bootstrap: Bootstrap;
  bootstrapKey: string;
  layers: ConvertedLayer[];
  skipped: SkippedEntries;
}

export async function convertImage(source: ImageSource, opts: ConvertImageOptions): Promise<ConvertedImage> {
  const image = opts.image ?? (await resolveImage(source, opts.platform));
  const bootstrapKey = imageBootstrapKey(image.manifestDigest, paramsId(opts.params), image.platform);
  const layers: ConvertedLayer[] = [];
  for (const [i, layer] of image.layers.entries()) {
    opts.onLayer?.(i, layer);
    layers.push(await (opts.layerConverter ?? convertLayer)({ ...layer, open: () => source.blob(layer.digest) }, opts));
  }
  const stored = await getBytes(opts.store, bootstrapKey);
  if (stored) return { image, bootstrap: Bootstrap.decode(stored), bootstrapKey, layers, skipped: new SkippedEntries() };
  // One layer that a merge would not change (most single-layer base images) is its own image.
  const alone = layers.length === 1 ? imageOfOneLayer(layers[0]!.bootstrap, image.platform) : null;
  if (!alone) checkMergeSize(layers, opts.maxMergedEntries);
  const { bytes, skipped } = alone ? { bytes: alone, skipped: new SkippedEntries() } : mergeLayers(layers.map((l) => l.bootstrap), image.platform);
  await putBytes(opts.store, bootstrapKey, bytes);
  return { image, bootstrap: Bootstrap.decode(bytes), bootstrapKey, layers, skipped };
}

/** Refuses, as a bad layer is refused, an image whose merge would not fit the memory the limit stands for. */
function checkMergeSize(layers: ConvertedLayer[], max: number | undefined): void {
  if (max === undefined) return;
  const inodes = layers.reduce((n, l) => n + l.bootstrap.inodeCount, 0);
  if (inodes > max) throw new LayerFormatError(`its ${layers.length} layers hold ${inodes} entries together, more than the ${max} this converter can merge`);
}
