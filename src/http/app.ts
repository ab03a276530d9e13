// The one Hono app every runtime serves. Runtime entry files build the store, hasher and fetch for
// their platform and hand them here; nothing below this line knows which runtime it is on.
import { Hono } from "hono";
import { BlobCache } from "../cache/blobs.ts";
import { ManifestCache } from "../cache/manifests.ts";
import type { HasherFactory } from "../hash/hasher.ts";
import { Upstream, UpstreamUnreachable, type UpstreamOptions } from "../oci/upstream.ts";
import type { ContentStore } from "../store/store.ts";
import { errorResponse, OciError, toOciError } from "./errors.ts";
import { createMetrics, type Metrics } from "./metrics.ts";
import { apiVersionResponse, registryRoutes } from "./registry.ts";
import { upstreamPreset } from "../oci/presets.ts";
import { Conversions } from "../lazy/conversions.ts";
import { LayerIndex } from "../lazy/layer-index.ts";
import { lazyHandler } from "./lazy.ts";

export interface AppOptions {
  upstream: UpstreamOptions;
  store: ContentStore;
  hasher: HasherFactory;
  /** How long a tag answer is served without asking the upstream again. */
  tagTtlSeconds?: number;
  /** Registry names accepted in `?ns=` besides the upstream's host (e.g. `docker.io`). */
  registryAliases?: string[];
  /** Layers larger than this are not converted (default 8 GiB). */
  maxLayerBytes?: number;
  /** How long a bootstrap request waits for a conversion before answering 202 (default 30 s). */
  convertWaitSeconds?: number;
  /** Platform of bootstraps when the request names none (default linux/amd64). */
  defaultPlatform?: string;
  log?: (message: string) => void;
  now?: () => number;
}

export interface SkiffApp {
  app: Hono;
  metrics: Metrics;
  upstream: Upstream;
}

export function createApp(opts: AppOptions): SkiffApp {
  const metrics = createMetrics();
  const preset = upstreamPreset(opts.upstream.url);
  const upstream = new Upstream({
    ...opts.upstream,
    allowHosts: [...(preset?.allowHosts ?? []), ...(opts.upstream.allowHosts ?? [])],
    onExchange: (status) => metrics.inc("skiff_upstream_requests_total", { status: String(status) }),
  });
  const { store, hasher, log } = opts;
  const blobs = new BlobCache({ store, upstream, hasher, metrics, log });
  const manifests = new ManifestCache({ store, upstream, hasher, metrics, tagTtlMs: (opts.tagTtlSeconds ?? 60) * 1000, now: opts.now });
  const conversions = new Conversions({ store, hasher, metrics, blobs, manifests, maxLayerBytes: opts.maxLayerBytes ?? 8 * 2 ** 30, log, now: opts.now });
  const publicContent = !opts.upstream.credentials;
  const lazy = lazyHandler({
    store,
    hasher,
    metrics,
    blobs,
    manifests,
    conversions,
    layers: new LayerIndex(store),
    publicContent,
    convertWaitMs: (opts.convertWaitSeconds ?? 30) * 1000,
    defaultPlatform: opts.defaultPlatform ?? "linux/amd64",
  });

  const app = new Hono();
  app.use(async (c, next) => {
    await next();
    const kind = c.req.path.startsWith("/v2/") ? (/\/(manifests|blobs|tags|_skiff)\//.exec(c.req.path)?.[1]?.replace("_skiff", "lazy") ?? "base") : "other";
    metrics.inc("skiff_http_requests_total", { kind, method: c.req.method, status: String(c.res.status) });
    c.res.headers.set("Docker-Distribution-API-Version", "registry/2.0");
  });

  app.get("/metrics", () => new Response(metrics.render(), { headers: { "Content-Type": "text/plain; version=0.0.4; charset=utf-8" } }));
  app.get("/v2", (c) => apiVersionResponse(c.req.method));
  app.get("/v2/", (c) => apiVersionResponse(c.req.method));
  app.route(
    "/v2",
    registryRoutes({
      store,
      upstream,
      blobs,
      manifests,
      metrics,
      registryAliases: [...(preset?.aliases ?? []), ...(opts.registryAliases ?? [])],
      publicContent,
      upstreamName: preset?.upstreamName ?? ((name) => name),
      lazy,
    }),
  );

  app.notFound((c) => errorResponse(new OciError("NAME_UNKNOWN", `no such route: ${c.req.path}`, { status: 404 }), c.req.method));
  app.onError((err, c) => {
    const oci = err instanceof UpstreamUnreachable ? new OciError("UNAVAILABLE", err.message) : toOciError(err);
    if (oci.code === "UNKNOWN") log?.(`internal error on ${c.req.method} ${c.req.path}: ${(err as Error).stack ?? err}`);
    return errorResponse(oci, c.req.method);
  });

  return { app, metrics, upstream };
}
