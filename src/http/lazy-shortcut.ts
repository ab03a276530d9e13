// The range shortcut's half for the lazy API (src/http/lazy.ts): a single range of a converted
// layer's data blob, and a chunk (whole, or one range of it), answered from memory and one read of
// the store. Only a layer whose conversion is decoded in memory and whose entitlement is known is
// answered here; a conversion to run, a link to confirm upstream, a vanished data blob and every
// error but the access decision's are the app's (the shortcut then declines, having counted nothing).
import type { BlobCache } from "../cache/blobs.ts";
import { CHUNK_CODECS, type ChunkCodec } from "../format/chunk-codec.ts";
import { parseParamsId } from "../format/params.ts";
import type { ConvertedLayerIndex, LayerIndex } from "../lazy/layer-index.ts";
import type { UpstreamRoute } from "../config/config.ts";
import { isValidRepositoryName, parseDigest, type Digest } from "../oci/reference.ts";
import { blobLinkKey } from "../store/keys.ts";
import type { ContentStore } from "../store/store.ts";
import type { BufferPool } from "../util/buffer-pool.ts";
import type { Metrics } from "../util/metrics.ts";
import { contentRange, parseRange } from "./range.ts";
import { SMALL_BODY } from "./ranged.ts";
import type { CacheScope } from "./registry.ts";
import type { PlainAnswer } from "./plain-answer.ts";

/** A lazy data or chunk URL, worked out once. */
export interface LazyTarget {
  kind: "lazy";
  route: UpstreamRoute;
  layer: Digest;
  /** The conversion parameters' id as in the URL (valid). */
  params: string;
  codec: ChunkCodec;
  /** The chunk the URL names, or null for the data blob. */
  chunk: { hex: string; form: string } | null;
}

export interface LazyShortcutDeps {
  store: ContentStore;
  blobs: BlobCache;
  layers: LayerIndex;
  metrics: Metrics;
}

const LAZY_SEGMENT = "/_skiff/";
const IMMUTABLE = "max-age=31536000, immutable";
const API_VERSION = "registry/2.0";
const REMEMBERED_ENTITLEMENTS = 20_000;

/**
 * The data or chunk route a request path (after `/v2/`, no query or escapes) names, split as the app
 * splits it; null for any other path, lazy or not. `route` resolves the repository's upstream.
 */
export function parseLazyTarget(path: string, route: (name: string) => UpstreamRoute | null): LazyTarget | null {
  // Repository names never have a component starting with `_`, so the first `/_skiff/` ends the name.
  const at = path.indexOf(LAZY_SEGMENT);
  if (at <= 0) return null;
  const name = path.slice(0, at);
  const parts = path.slice(at + LAZY_SEGMENT.length).split("/");
  if (parts[0] !== "layers" || !isValidRepositoryName(name)) return null;
  let chunk: LazyTarget["chunk"] = null;
  if (parts.length === 5 && parts[3] === "chunks") {
    const m = /^([0-9a-f]{64})\.([a-z0-9-]+)$/.exec(parts[4]!);
    if (!m || !CHUNK_CODECS.some((codec) => codec === m[2])) return null;
    chunk = { hex: m[1]!, form: m[2]! };
  } else if (parts.length !== 4 || parts[3] !== "data") return null;
  const layer = parseDigest(parts[1]!);
  const params = parseParamsId(parts[2]!);
  const upstream = layer && params && route(name);
  if (!upstream) return null;
  return { kind: "lazy", route: upstream, layer, params: parts[2]!, codec: params.codec, chunk };
}

/** Answers a lazy target the access decision has let through, or resolves undefined for the app. */
export function lazyAnswers(deps: LazyShortcutDeps, buffers: BufferPool) {
  const entitled = new Map<string, true>();
  const countBytes = {
    data: deps.metrics.counter("skiff_chunk_bytes_served_total", { route: "data" }),
    chunks: deps.metrics.counter("skiff_chunk_bytes_served_total", { route: "chunks" }),
  };
  const countStatus = {
    200: deps.metrics.counter("skiff_http_requests_total", { kind: "lazy", method: "GET", status: "200" }),
    206: deps.metrics.counter("skiff_http_requests_total", { kind: "lazy", method: "GET", status: "206" }),
  };

  return async function answer(target: LazyTarget, rangeHeader: string | null, scope: CacheScope, granted: () => void): Promise<PlainAnswer | undefined> {
    // The data blob is answered by range only: whole, it is the size of a layer.
    if (!target.chunk && rangeHeader === null) return;
    if (!(await isEntitled(target.route.repository, target.layer))) return;
    const layer = deps.layers.remembered(target.layer, target.params);
    if (!layer) return;
    const region = regionOf(layer, target);
    if (!region || region.length === 0) return;

    let span: { offset: number; length: number } = region;
    let range: { start: number; end: number } | null = null;
    if (rangeHeader !== null) {
      const wanted = parseRange(rangeHeader, region.length);
      if (wanted.kind !== "ranges" || wanted.ranges.length !== 1) return;
      range = wanted.ranges[0]!;
      span = { offset: region.offset + range.start, length: range.end - range.start + 1 };
    }
    if (span.length > SMALL_BODY) return;
    const buffer = buffers.take(span.length);
    // Data gone from the store is the app's to answer (503, and the conversion forgotten).
    const body = await deps.store.readSpan!(layer.dataKey, span, buffer).catch(() => null);
    if (body?.byteLength !== span.length) return void buffers.give(buffer);

    granted();
    countBytes[target.chunk ? "chunks" : "data"](span.length);
    countStatus[range ? 206 : 200]();
    // The headers of lazy.ts's answers through serveRanged (ranged.ts), in its order.
    const headers: Record<string, string> = {
      "Cache-Control": `${scope}, ${IMMUTABLE}`,
      ETag: region.etag,
      "Accept-Ranges": "bytes",
      "Content-Type": "application/octet-stream",
    };
    if (range) headers["Content-Range"] = contentRange(range, region.length);
    headers["Content-Length"] = String(span.length);
    headers["Docker-Distribution-API-Version"] = API_VERSION;
    return { status: range ? 206 : 200, headers, body, written: () => buffers.give(buffer) };
  };

  /** The part of the layer's data blob the target names, with its validator; null for an unknown chunk. */
  function regionOf(layer: ConvertedLayerIndex, target: LazyTarget): { offset: number; length: number; etag: string } | null {
    if (!target.chunk) return { offset: 0, length: layer.dataSize, etag: layer.dataETag };
    const record = layer.chunk(target.chunk.hex);
    // The form in the URL must be the one stored: a chunk kept raw in a deflate layer is `.none`.
    if (!record || (record.compressed ? target.codec : "none") !== target.chunk.form) return null;
    return { offset: record.storedOffset, length: record.storedSize, etag: `"${target.chunk.hex}.${target.chunk.form}"` };
  }

  /**
   * What the app's `blobs.entitled` finds without the upstream: the blob cache's memory, or the
   * repository's link in the store (links are never taken back, so a link seen is remembered). Without
   * either the app asks the upstream.
   */
  async function isEntitled(repository: string, layer: Digest): Promise<boolean> {
    const key = `${repository}@${layer.value}`;
    if (entitled.has(key) || deps.blobs.remembered(repository, layer)) return true;
    if (!(await deps.store.stat(blobLinkKey(repository, layer)).catch(() => null))) return false;
    if (entitled.size >= REMEMBERED_ENTITLEMENTS) entitled.delete(entitled.keys().next().value!);
    entitled.set(key, true);
    return true;
  }
}
