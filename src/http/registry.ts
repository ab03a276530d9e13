// The OCI distribution pull API (`/v2/…`) of the mirror: manifests, blobs and tag lists, answered
// from the verified cache or pulled through from the upstream.
import { Hono, type Context } from "hono";
import type { BlobCache } from "../cache/blobs.ts";
import { blobKey } from "../store/keys.ts";
import type { Manifest, ManifestCache } from "../cache/manifests.ts";
import { upstreamError } from "../oci/upstream-errors.ts";
import { isDigestLike, isValidRepositoryName, isValidTag, parseDigest, splitRegistryPath, type Digest } from "../oci/reference.ts";
import type { UpstreamConfig } from "../config/config.ts";
import type { Upstreams } from "../oci/upstreams.ts";
import type { AccessPolicy } from "../access/policy.ts";
import type { ContentStore } from "../store/store.ts";
import { readAll } from "../util/streams.ts";
import { OciError } from "../oci/errors.ts";
import type { Metrics } from "../util/metrics.ts";
import { serveRanged, storedRegion, type RangedSource, type Served } from "./ranged.ts";

export interface RegistryDeps {
  store: ContentStore;
  upstreams: Upstreams<UpstreamConfig>;
  access: AccessPolicy;
  blobs: BlobCache;
  manifests: ManifestCache;
  metrics: Metrics;
  /** The `_skiff` extension (src/http/lazy.ts), given the repository id and the path after `_skiff/`. */
  lazy?: (c: Context, repository: string, rest: string, cacheScope: CacheScope) => Promise<Response>;
}

/** `Cache-Control` scope of an answer: `public` only when anyone may have it. */
export type CacheScope = "public" | "private";

const LAZY_SEGMENT = "/_skiff/";

const IMMUTABLE = "max-age=31536000, immutable";
// Tag lists are relayed whole; a repository with 100,000 tags still fits.
const MAX_TAG_LIST_BYTES = 16 * 1024 * 1024;

export function registryRoutes(deps: RegistryDeps): Hono {
  const app = new Hono();

  app.all("/*", async (c) => {
    const method = c.req.method;
    const path = c.req.path.replace(/^\/v2\//, "");
    // Repository names never have a component starting with `_`, so the first `/_skiff/` ends the name.
    const lazyAt = deps.lazy ? path.indexOf(LAZY_SEGMENT) : -1;
    // The lazy API takes one POST (nodes' read reports) and refuses it on its other routes itself.
    if (method !== "GET" && method !== "HEAD" && !(method === "POST" && lazyAt > 0)) {
      throw new OciError("UNSUPPORTED", `${method} is not supported: skiff is a read-only pull-through mirror`, { headers: { Allow: "GET, HEAD" } });
    }
    const route = lazyAt > 0 ? { name: path.slice(0, lazyAt), kind: "lazy" as const, rest: path.slice(lazyAt + LAZY_SEGMENT.length) } : splitRegistryPath(path);
    if (!route) throw new OciError("NAME_UNKNOWN", `no such route: ${c.req.path}`, { status: 404 });
    if (!isValidRepositoryName(route.name)) throw new OciError("NAME_INVALID", `invalid repository name: ${JSON.stringify(route.name.slice(0, 300))}`);
    const target = deps.upstreams.route(route.name, c.req.query("ns"));
    // Access is decided before any cache is looked at, whatever the route.
    const grant = await deps.access.authorize(c.req.raw, target);
    const scope: CacheScope = grant.shareable ? "public" : "private";
    const repository = target.repository;

    if (route.kind === "lazy") return deps.lazy!(c, repository, route.rest, scope);
    if (route.kind === "manifests") return manifestRoute(c, repository, route.rest, scope);
    if (route.kind === "blobs") return blobRoute(c, repository, route.rest, scope);
    if (route.rest !== "list") throw new OciError("NAME_UNKNOWN", `no such route: ${c.req.path}`, { status: 404 });
    return tagsRoute(c, repository);
  });

  async function manifestRoute(c: Context, name: string, reference: string, cacheScope: CacheScope): Promise<Response> {
    const accept = c.req.header("accept") ?? null;
    const head = c.req.method === "HEAD";
    let manifest: Manifest;
    let immutable = false;
    if (isDigestLike(reference)) {
      manifest = await deps.manifests.byDigest(name, requireDigest(reference), accept);
      immutable = true;
    } else {
      if (!isValidTag(reference)) throw new OciError("TAG_INVALID", `invalid tag: ${JSON.stringify(reference.slice(0, 200))}`);
      manifest = await deps.manifests.byTag(name, reference, accept, head);
    }
    deps.metrics.inc(manifest.hit ? "skiff_cache_hits_total" : "skiff_cache_misses_total", { kind: "manifest" });
    const headers = new Headers({
      "Content-Type": manifest.mediaType,
      "Content-Length": String(manifest.size),
      "Docker-Content-Digest": manifest.digest.value,
      ETag: `"${manifest.digest.value}"`,
      "Cache-Control": immutable ? `${cacheScope}, ${IMMUTABLE}` : "no-cache",
    });
    if (manifest.stale) headers.set("Warning", '110 skiff "Response is Stale"');
    if (head || !manifest.bytes) return new Response(null, { status: 200, headers });
    countServed("manifest", manifest.size);
    return new Response(manifest.bytes, { status: 200, headers });
  }

  async function blobRoute(c: Context, name: string, reference: string, cacheScope: CacheScope): Promise<Response> {
    const digest = requireDigest(reference);
    const request = c.req.raw;
    const cached = await deps.blobs.cached(name, digest);
    if (cached) {
      try {
        const served = await serveStoredBlob(request, digest, cached.size, cacheScope);
        deps.metrics.inc("skiff_cache_hits_total", { kind: "blob" });
        return counted(served);
      } catch (err) {
        // Gone between the lookup and the read (evicted, or a bucket's lifecycle rule): a miss.
        if (!(err instanceof BlobVanished)) throw err;
      }
    }
    deps.metrics.inc("skiff_cache_misses_total", { kind: "blob" });
    if (request.method === "HEAD") {
      const { size } = await deps.blobs.upstreamHead(name, digest);
      return new Response(null, { status: 200, headers: blobHeaders(digest, size, cacheScope) });
    }
    // A range (or a conditional answer) can only be cut from verified bytes, so such a miss
    // waits for the whole blob; a plain GET is streamed live while it is verified.
    const conditional = request.headers.has("range") || request.headers.has("if-none-match");
    const fetch = await deps.blobs.fetch(name, digest, !conditional);
    if (fetch.live) {
      countServed("blob", fetch.size ?? 0);
      return new Response(fetch.live, { status: 200, headers: blobHeaders(digest, fetch.size, cacheScope) });
    }
    const size = await fetch.done;
    return counted(await serveStoredBlob(request, digest, size, cacheScope));
  }

  async function tagsRoute(c: Context, name: string): Promise<Response> {
    const params = new URLSearchParams();
    const n = c.req.query("n");
    const last = c.req.query("last");
    if (n !== undefined) {
      if (!/^\d{1,6}$/.test(n)) throw new OciError("UNSUPPORTED", "n must be a non-negative integer", { status: 400 });
      params.set("n", n);
    }
    if (last !== undefined) params.set("last", last);
    const res = await deps.upstreams.request(name, "tags/list", { query: params.toString() });
    if (!res.ok) throw await upstreamError(res, "tags", `repository ${name}`);
    let body: Uint8Array<ArrayBuffer>;
    try {
      body = await readAll(res.body!, MAX_TAG_LIST_BYTES);
    } catch (err) {
      throw new OciError("UNAVAILABLE", `could not read the tag list of ${name} from upstream: ${(err as Error).message}`);
    }
    deps.metrics.inc("skiff_upstream_bytes_total", {}, body.byteLength);
    const headers = new Headers({ "Content-Type": "application/json", "Content-Length": String(body.byteLength), "Cache-Control": "no-cache" });
    const link = res.headers.get("link");
    if (link) headers.set("Link", link);
    if (c.req.method !== "HEAD") countServed("tags", body.byteLength);
    return new Response(c.req.method === "HEAD" ? null : body, { status: 200, headers });
  }

  function blobHeaders(digest: Digest, size: number | null, cacheScope: CacheScope): Headers {
    const headers = new Headers({
      "Content-Type": "application/octet-stream",
      "Docker-Content-Digest": digest.value,
      ETag: `"${digest.value}"`,
      "Accept-Ranges": "bytes",
      "Cache-Control": `${cacheScope}, ${IMMUTABLE}`,
    });
    if (size !== null) headers.set("Content-Length", String(size));
    return headers;
  }

  function serveStoredBlob(request: Request, digest: Digest, size: number, cacheScope: CacheScope): Promise<Served> {
    return serveRanged(request, storedBlob(deps, digest, size, cacheScope));
  }

  function counted(served: Served): Response {
    countServed("blob", served.bytes);
    return served.response;
  }

  function countServed(kind: string, bytes: number): void {
    if (bytes > 0) deps.metrics.inc("skiff_served_bytes_total", { kind }, bytes);
  }

  return app;
}

/** A cached blob as the blob route serves it. */
export function storedBlob(deps: Pick<RegistryDeps, "store" | "blobs">, digest: Digest, size: number, cacheScope: CacheScope): RangedSource {
  return {
    size,
    etag: `"${digest.value}"`,
    contentType: "application/octet-stream",
    headers: { "Docker-Content-Digest": digest.value, "Cache-Control": `${cacheScope}, ${IMMUTABLE}` },
    ...storedRegion(deps.store, blobKey(digest), { offset: 0, length: size }, () => {
      deps.blobs.forget(digest);
      return new BlobVanished(digest);
    }),
  };
}

/** A blob found cached was gone when it was read. */
class BlobVanished extends OciError {
  constructor(digest: Digest) {
    super("BLOB_UNKNOWN", `blob ${digest.value} vanished from the store`);
  }
}

export function apiVersionResponse(method: string): Response {
  const headers = { "Content-Type": "application/json", "Docker-Distribution-API-Version": "registry/2.0", "Content-Length": "2" };
  return new Response(method === "HEAD" ? null : "{}", { status: 200, headers });
}

function requireDigest(reference: string): Digest {
  const digest = parseDigest(reference);
  if (!digest) throw new OciError("DIGEST_INVALID", `invalid or unsupported digest: ${JSON.stringify(reference.slice(0, 200))}`);
  return digest;
}
