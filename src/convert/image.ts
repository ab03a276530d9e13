// Converts an image: resolve the platform's manifest, convert each layer (or reuse its stored
// conversion), merge the layer bootstraps and publish the image bootstrap last.
import type { ChunkEncoder } from "./chunk-encoder.ts";
import { imageBootstrapKey } from "../store/keys.ts";
import { imageOfOneLayer } from "../format/encode.ts";
import { Bootstrap } from "../format/decode.ts";
import type { HasherFactory } from "../hash/hasher.ts";
import { parseDigest, type Digest } from "../oci/reference.ts";
import { getBytes, putBytes, type ContentStore } from "../store/store.ts";
import { readAll } from "../util/streams.ts";
import { LayerFormatError, type GunzipFactory, type UnzstdFactory } from "./decompress.ts";
import { CONVERSION_BASE_BYTES, convertLayer, type ConvertedLayer, type ConvertLayerOptions, type LayerSource, type StepBudget } from "./layer.ts";
import { SkippedEntries } from "./layer-tree.ts";
import { mergeLayers } from "./merge.ts";
import { paramsId, type ConvertParams } from "../format/params.ts";

export interface FetchedManifest {
  digest: Digest;
  mediaType: string;
  bytes: Uint8Array;
}

/** Where an image comes from: an OCI layout on disk, a registry, the proxy's cache. */
export interface ImageSource {
  /** The manifest or index the reference names. */
  root(): Promise<FetchedManifest>;
  manifest(digest: Digest): Promise<FetchedManifest>;
  blob(digest: Digest): Promise<ReadableStream<Uint8Array>>;
}

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  platform?: { os?: string; architecture?: string; variant?: string };
}

export interface ResolvedImage {
  manifestDigest: Digest;
  platform: string;
  layers: { digest: Digest; mediaType: string; size: number }[];
}

export class ImageError extends Error {}

const INDEX_TYPES = new Set(["application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json"]);
const MANIFEST_TYPES = new Set(["application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json"]);
const PLATFORM = /^[a-z0-9_.-]+\/[a-z0-9_.-]+(\/[a-z0-9_.-]+)?$/;

export function parsePlatform(text: string): { os: string; architecture: string; variant?: string } {
  if (!PLATFORM.test(text)) throw new ImageError(`invalid platform ${JSON.stringify(text)} (want os/arch[/variant])`);
  const [os, architecture, variant] = text.split("/") as [string, string, string?];
  return { os, architecture, variant };
}

/** Follows an index to the manifest for `platform` and lists its layers. */
/**
 * The platform manifest of the image and its layers: the root itself, or the manifest for `platform`
 * in an index (an ImageError with `manifestOnly`, for a caller that named a platform manifest).
 */
export async function resolveImage(source: ImageSource, platform: string, opts: { manifestOnly?: boolean } = {}): Promise<ResolvedImage> {
  const wanted = parsePlatform(platform);
  let top = await source.root();
  let json = parseJson(top);
  let resolvedPlatform: string | null = null;
  if (INDEX_TYPES.has(mediaTypeOf(top, json))) {
    if (opts.manifestOnly) throw new ImageError(`${top.digest.value} is an index, not a platform manifest`);
    const manifests = (json.manifests ?? []) as Descriptor[];
    const match = manifests.find(
      (m) => m.platform?.os === wanted.os && m.platform?.architecture === wanted.architecture && (wanted.variant === undefined || m.platform?.variant === wanted.variant),
    );
    if (!match) {
      const have = manifests.map((m) => [m.platform?.os, m.platform?.architecture, m.platform?.variant].filter(Boolean).join("/")).join(", ");
      throw new ImageError(`no manifest for platform ${platform} in the index (it has: ${have || "none"})`);
    }
    top = await source.manifest(requireDigest(match.digest));
    json = parseJson(top);
    resolvedPlatform = platform;
  }
  const layers = layersOf(top, json);
  // A lone manifest says its platform only in its config; the bootstrap is labelled with that.
  resolvedPlatform ??= await configPlatform(source, json.config as Descriptor | undefined);
  return { manifestDigest: top.digest, platform: resolvedPlatform ?? platform, layers };
}

/**
 * The layers and config of a platform manifest as they are, before any upstream request; null for
 * an index, or for anything resolveImage would refuse.
 */
export function platformManifest(m: FetchedManifest): { layers: ResolvedImage["layers"]; config: Descriptor | undefined } | null {
  try {
    const json = parseJson(m);
    return { layers: layersOf(m, json), config: json.config as Descriptor | undefined };
  } catch (err) {
    if (err instanceof ImageError) return null;
    throw err;
  }
}

function layersOf(m: FetchedManifest, json: Record<string, unknown>): ResolvedImage["layers"] {
  const mediaType = mediaTypeOf(m, json);
  if (!MANIFEST_TYPES.has(mediaType)) throw new ImageError(`unsupported manifest media type ${JSON.stringify(mediaType)}`);
  const layers = ((json.layers ?? []) as Descriptor[]).map((l) => {
    if (typeof l.mediaType !== "string" || !Number.isSafeInteger(l.size)) throw new ImageError("manifest has a malformed layer descriptor");
    return { digest: requireDigest(l.digest), mediaType: l.mediaType, size: l.size };
  });
  if (layers.length === 0) throw new ImageError("manifest has no layers");
  return layers;
}

export interface ConvertImageOptions {
  store: ContentStore;
  hasher: HasherFactory;
  gunzip?: GunzipFactory;
  unzstd?: UnzstdFactory;
  /** Encodes the chunks (see ConvertLayerOptions). */
  chunkEncoder?: ChunkEncoder;
  params: ConvertParams;
  platform: string;
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
  const image = await resolveImage(source, opts.platform);
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

async function configPlatform(source: ImageSource, config: Descriptor | undefined): Promise<string | null> {
  if (!config || typeof config.digest !== "string") return null;
  const bytes = await readAll(await source.blob(requireDigest(config.digest)), 4 << 20);
  try {
    const c = JSON.parse(new TextDecoder().decode(bytes)) as { os?: unknown; architecture?: unknown; variant?: unknown };
    const text = [c.os, c.architecture, c.variant].filter((p) => typeof p === "string" && p !== "").join("/");
    return PLATFORM.test(text) ? text : null;
  } catch {
    return null;
  }
}

function parseJson(m: FetchedManifest): Record<string, unknown> {
  try {
    const value = JSON.parse(new TextDecoder().decode(m.bytes)) as unknown;
    if (value && typeof value === "object" && !Array.isArray(value)) return value as Record<string, unknown>;
  } catch {
    // reported below
  }
  throw new ImageError(`manifest ${m.digest.value} is not a JSON object`);
}

function mediaTypeOf(m: FetchedManifest, json: Record<string, unknown>): string {
  return typeof json.mediaType === "string" ? json.mediaType : m.mediaType;
}

function requireDigest(value: unknown): Digest {
  const d = typeof value === "string" ? parseDigest(value) : null;
  if (!d) throw new ImageError(`invalid digest ${JSON.stringify(value)} in manifest`);
  return d;
}
