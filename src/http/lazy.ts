// The lazy API, a registry extension under each repository (`/v2/<name>/_skiff/…`, the `_`-prefixed
// namespace the distribution spec leaves to extensions), so every access rule that applies to the
// repository applies here too:
//   GET /v2/<name>/_skiff/bootstrap/<tag|digest>[?platform=&chunk-size=&codec=]   image bootstrap
//   GET /v2/<name>/_skiff/layers/<layer digest>/<params>/bootstrap                 one layer's bootstrap
//   GET /v2/<name>/_skiff/layers/<layer digest>/<params>/data                      data blob, by range
//   GET /v2/<name>/_skiff/layers/<layer digest>/<params>/chunks/<sha256 hex>.<form> one chunk
//   GET, POST /v2/<name>/_skiff/images/<manifest digest>/<params>/reads             learned prefetch (learned-reads.ts)
import type { Context } from "hono";
import type { BlobCache } from "../cache/blobs.ts";
import type { Manifest, ManifestCache } from "../cache/manifests.ts";
import { MANIFEST_MEDIA_TYPES } from "../cache/manifests.ts";
import { DEFAULT_PARAMS, paramsId, parseChunkSize, parseParamsId, type ConvertParams } from "../format/params.ts";
import { CHUNK_CODECS } from "../format/chunk-codec.ts";
import { BOOTSTRAP_MEDIA_TYPE } from "../format/layout.ts";
import type { Bootstrap } from "../format/decode.ts";
import { parsePlatform } from "../convert/image-source.ts";
import { hashBytes, type HasherFactory } from "../hash/hasher.ts";
import { ConversionPending, type Conversions, type ImageBootstrap } from "../lazy/conversions.ts";
import type { ConvertedLayerIndex, LayerIndex } from "../lazy/layer-index.ts";
import { isDigestLike, isValidTag, parseDigest } from "../oci/reference.ts";
import type { ContentStore } from "../store/store.ts";
import { OciError } from "../oci/errors.ts";
import type { Metrics } from "../util/metrics.ts";
import { within } from "../util/sleep.ts";
import { bytesStream, onStreamEnd } from "../util/streams.ts";
import { gzipWhenAccepted, type GzipOptions } from "./gzip.ts";
import { serveRanged, storedRegion } from "./ranged.ts";
import type { CacheScope } from "./registry.ts";

export interface LazyDeps {
  store: ContentStore;
  hasher: HasherFactory;
  metrics: Metrics;
  blobs: BlobCache;
  manifests: ManifestCache;
  conversions: Conversions;
  layers: LayerIndex;
  /** The learned-prefetch route (learned-reads.ts). */
  reads: (c: Context, name: string, manifestRef: string, paramsRef: string, cacheScope: CacheScope) => Promise<Response>;
  /** How long a bootstrap request waits for a running conversion before answering 202. */
  convertWaitMs: number;
  defaultPlatform: string;
  /** How this runtime gzips a bootstrap for a node that takes gzip (gzip.ts). */
  gzip: GzipOptions;
}

const IMMUTABLE = "max-age=31536000, immutable";
const RETRY_AFTER_S = 5;

export function lazyHandler(deps: LazyDeps) {
  return async function handle(c: Context, name: string, rest: string, cacheScope: CacheScope): Promise<Response> {
    const parts = rest.split("/");
    if (parts[0] === "images" && parts.length === 4 && parts[3] === "reads") return deps.reads(c, name, parts[1]!, parts[2]!, cacheScope);
    if (c.req.method === "POST") throw new OciError("UNSUPPORTED", `POST is not supported on ${c.req.path}`, { headers: { Allow: "GET, HEAD" } });
    if (parts[0] === "bootstrap" && parts.length === 2) return bootstrap(c, name, parts[1]!, cacheScope);
    if (parts[0] === "layers" && parts.length === 4 && parts[3] === "data") return data(c, name, parts[1]!, parts[2]!, cacheScope);
    if (parts[0] === "layers" && parts.length === 4 && parts[3] === "bootstrap") return layerBootstrap(c, name, parts[1]!, parts[2]!, cacheScope);
    if (parts[0] === "layers" && parts.length === 5 && parts[3] === "chunks") return chunk(c, name, parts[1]!, parts[2]!, parts[4]!, cacheScope);
    throw new OciError("NAME_UNKNOWN", `no such route: ${c.req.path}`, { status: 404 });
  };

  async function bootstrap(c: Context, name: string, reference: string, cacheScope: CacheScope): Promise<Response> {
    const params = requestedParams(c);
    const platform = c.req.query("platform") ?? deps.defaultPlatform;
    try {
      parsePlatform(platform);
    } catch (err) {
      throw new OciError("UNSUPPORTED", (err as Error).message, { status: 400 });
    }
    const accept = MANIFEST_MEDIA_TYPES.join(", ");
    let root: Manifest;
    const byDigest = isDigestLike(reference);
    if (byDigest) {
      const digest = parseDigest(reference);
      if (!digest) throw new OciError("DIGEST_INVALID", `invalid digest ${JSON.stringify(reference.slice(0, 200))}`);
      root = await deps.manifests.byDigest(name, digest, accept);
    } else {
      if (!isValidTag(reference)) throw new OciError("TAG_INVALID", `invalid tag ${JSON.stringify(reference.slice(0, 200))}`);
      root = await deps.manifests.byTag(name, reference, accept, false);
    }

    const job = deps.conversions.image(name, root, platform, params);
    job.result.catch(() => {}); // a request that stopped waiting must not leave an unhandled rejection
    let waited: ImageBootstrap | null | "timeout";
    try {
      // A stored bootstrap is answered as soon as it is read; the wait (and the 202 after it) only
      // applies once layers actually have to be converted. Finding out is bounded too: a job that
      // never gets that far (its work lost with the invocation that ran it) must not hold this request.
      waited = await within(Math.max(deps.convertWaitMs, FIND_WAIT_MS), Promise.race([job.result, job.converting.then(() => null)]));
      if (waited === null) waited = await within(deps.convertWaitMs, Promise.race([job.result, job.early]));
    } catch (err) {
      // This request's step is done, or another process converts: the next request goes on.
      if (err instanceof ConversionPending) return converting();
      throw err;
    }
    if (waited === "timeout") {
      keepRunning(c, job.result);
      return converting();
    }
    // The bootstrap may be stored, or converted, for another repository with the same manifest
    // bytes: its tree is shown to `name` only if `name` may see every layer, as the layer routes do.
    await entitledToLayers(name, waited.bootstrap);
    // An early `none` answer stands in while the requested codec converts: nothing may cache it.
    const early = paramsId(waited.params) !== paramsId(params);
    if (!early) return serveBootstrap(c, waited, byDigest ? "immutable" : "no-cache", cacheScope);
    deps.metrics.inc("skiff_none_first_answers_total");
    keepRunning(c, job.result);
    // The requested codec's conversion waits until this answer has gone out.
    const res = await serveBootstrap(c, waited, "no-store", cacheScope).catch((err: unknown) => {
      job.earlySent();
      throw err;
    });
    if (!res.body) {
      job.earlySent();
      return res;
    }
    return new Response(onStreamEnd(res.body, job.earlySent), res);
  }

  async function entitledToLayers(name: string, bootstrap: Bootstrap): Promise<void> {
    const layers = Array.from({ length: bootstrap.blobCount }, (_, i) => parseDigest(bootstrap.blob(i).layerDigest)!);
    await Promise.all(layers.map((layer) => deps.blobs.entitled(name, layer)));
  }

  function converting(): Response {
    const body = JSON.stringify({ status: "converting", retryAfter: RETRY_AFTER_S });
    return new Response(body, { status: 202, headers: { "Content-Type": "application/json", "Retry-After": String(RETRY_AFTER_S), "Cache-Control": "no-store" } });
  }

  function serveBootstrap(c: Context, image: ImageBootstrap, caching: "immutable" | "no-cache" | "no-store", cacheScope: CacheScope): Promise<Response> {
    return bootstrapResponse(c, image.bootstrap.bytes, {
      "Skiff-Manifest-Digest": image.manifestDigest.value,
      "Skiff-Platform": image.platform,
      "Skiff-Params": paramsId(image.params),
      "Cache-Control": caching === "immutable" ? `${cacheScope}, ${IMMUTABLE}` : caching,
    });
  }

  /** A converted layer's own bootstrap (whiteouts and opaque directories kept), for a node that mounts layer by layer. */
  async function layerBootstrap(c: Context, name: string, layerRef: string, paramsRef: string, cacheScope: CacheScope): Promise<Response> {
    const layer = await convertedLayer(c, name, layerRef, paramsRef);
    return bootstrapResponse(c, layer.bootstrap.bytes, { "Skiff-Params": paramsRef, "Cache-Control": `${cacheScope}, ${IMMUTABLE}` });
  }

  function bootstrapResponse(c: Context, bytes: Uint8Array, headers: Record<string, string>): Promise<Response> {
    const digest = `sha256:${hashBytes(deps.hasher, "sha256", bytes)}`;
    return serveRanged(c.req.raw, {
      size: bytes.byteLength,
      etag: `"${digest}"`,
      contentType: BOOTSTRAP_MEDIA_TYPE,
      headers: { "Docker-Content-Digest": digest, ...headers },
      read: async (span) => bytesStream(span ? bytes.subarray(span.offset, span.offset + span.length) : bytes),
    }).then((served) => gzipWhenAccepted(c.req.raw, served.response, deps.gzip, { key: digest, bytes }));
  }

  async function data(c: Context, name: string, layerRef: string, paramsRef: string, cacheScope: CacheScope): Promise<Response> {
    const layer = await convertedLayer(c, name, layerRef, paramsRef);
    const served = await serveRanged(c.req.raw, {
      size: layer.dataSize,
      etag: layer.dataETag,
      contentType: "application/octet-stream",
      headers: { "Cache-Control": `${cacheScope}, ${IMMUTABLE}` },
      ...storedRegion(deps.store, layer.dataKey, { offset: 0, length: layer.dataSize }, () => vanished(layer)),
    });
    deps.metrics.inc("skiff_chunk_bytes_served_total", { route: "data" }, served.bytes);
    return served.response;
  }

  async function chunk(c: Context, name: string, layerRef: string, paramsRef: string, file: string, cacheScope: CacheScope): Promise<Response> {
    const m = /^([0-9a-f]{64})\.([a-z0-9-]+)$/.exec(file);
    if (!m || !CHUNK_CODECS.some((codec) => codec === m[2])) throw new OciError("DIGEST_INVALID", `invalid chunk name ${JSON.stringify(file.slice(0, 200))} (want <sha256 hex>.<codec>)`);
    const layer = await convertedLayer(c, name, layerRef, paramsRef);
    const record = layer.chunk(m[1]!);
    // The form in the URL must be the one stored: a chunk kept raw in a deflate layer is `.none`.
    const form = record?.compressed ? parseParamsId(paramsRef)!.codec : "none";
    if (!record || form !== m[2]) throw new OciError("BLOB_UNKNOWN", `no chunk ${file} in layer ${layerRef}`);
    const served = await serveRanged(c.req.raw, {
      size: record.storedSize,
      etag: `"${file}"`,
      contentType: "application/octet-stream",
      headers: { "Cache-Control": `${cacheScope}, ${IMMUTABLE}` },
      ...storedRegion(deps.store, layer.dataKey, { offset: record.storedOffset, length: record.storedSize }, () => vanished(layer)),
    });
    deps.metrics.inc("skiff_chunk_bytes_served_total", { route: "chunks" }, served.bytes);
    return served.response;
  }

  /**
   * The layer's data went behind the app's back (an R2 lifecycle rule, a hand in the directory):
   * its bootstrap goes too, so that the next request converts the layer again; the node retries.
   */
  async function vanished(layer: ConvertedLayerIndex): Promise<OciError> {
    deps.layers.forget(layer.bootstrapKey);
    await deps.store.delete(layer.bootstrapKey).catch(() => {}); // if it stays, the next request comes here again
    return new OciError("UNAVAILABLE", "converted data vanished from the store: it is converted again at the next request", { status: 503, headers: { "Retry-After": "1" } });
  }

  /**
   * A published conversion of a layer the repository is entitled to; converted (again) when the
   * store lacks it, e.g. after eviction, so a node holding a bootstrap made before is still served.
   */
  async function convertedLayer(c: Context, name: string, layerRef: string, paramsRef: string) {
    const layer = parseDigest(layerRef);
    if (!layer) throw new OciError("DIGEST_INVALID", `invalid layer digest ${JSON.stringify(layerRef.slice(0, 200))}`);
    const params = parseParamsId(paramsRef);
    if (!params) throw new OciError("NAME_UNKNOWN", `unknown conversion parameters ${JSON.stringify(paramsRef.slice(0, 100))}`, { status: 404 });
    // Converted data is shown only to repositories that may see the layer it came from.
    await deps.blobs.entitled(name, layer);
    const index = await deps.layers.get(layer, paramsRef);
    if (index) return index;
    const job = deps.conversions.layerAgain(name, layer, params);
    let waited: void | "timeout";
    try {
      waited = await within(deps.convertWaitMs, job);
    } catch (err) {
      if (!(err instanceof ConversionPending)) throw err;
      waited = "timeout";
    }
    if (waited === "timeout") {
      keepRunning(c, job);
      const headers = { "Retry-After": String(RETRY_AFTER_S) };
      throw new OciError("UNAVAILABLE", `layer ${layer.value} is being converted with ${paramsRef}; retry`, { status: 503, headers });
    }
    const converted = await deps.layers.get(layer, paramsRef);
    if (!converted) throw new OciError("UNAVAILABLE", `layer ${layer.value} was converted but is gone from the store again; retry`, { status: 503 });
    return converted;
  }

}


/** How long a bootstrap request may take to find its image's bootstrap stored, or its conversion started. */
const FIND_WAIT_MS = 5_000;

/**
 * The conversion goes on after the 202: on Workers the invocation is kept alive for it (for a limited
 * time); runtimes without an execution context keep running promises anyway.
 */
function keepRunning(c: Context, work: Promise<unknown>): void {
  let ctx: { waitUntil(p: Promise<unknown>): void } | undefined;
  try {
    ctx = c.executionCtx;
  } catch {
    return;
  }
  ctx.waitUntil(work.catch(() => {}));
}

/** Conversion parameters from the query: `chunk-size` (e.g. 1m) and `codec`. */
function requestedParams(c: Context): ConvertParams {
  const params = { ...DEFAULT_PARAMS };
  const size = c.req.query("chunk-size");
  if (size !== undefined) {
    try {
      params.chunkShift = parseChunkSize(size);
    } catch (err) {
      throw new OciError("UNSUPPORTED", (err as Error).message, { status: 400 });
    }
  }
  const codec = c.req.query("codec");
  if (codec !== undefined) {
    const known = CHUNK_CODECS.find((k) => k === codec);
    if (!known) throw new OciError("UNSUPPORTED", `unknown codec ${JSON.stringify(codec.slice(0, 50))}`, { status: 400 });
    params.codec = known;
  }
  return params;
}

