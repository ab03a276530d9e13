// Where an image comes from, and how its manifest for a platform is found: follows an index to
// the platform's manifest and lists its layers. Light on purpose: `skiff convert` resolves the image
// before the converter's modules load (src/cli/convert.ts).
import { parseDigest, type Digest } from "../oci/reference.ts";
import { readAll } from "../util/streams.ts";

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
