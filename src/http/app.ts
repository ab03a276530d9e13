// The one Hono app every runtime serves. Runtime entry files build the store, hasher and fetch for
// their platform and hand them here with the resolved configuration; nothing below this line knows
// which runtime it is on.
import type { ChunkEncoder } from "../convert/chunk-encoder.ts";
import { Hono } from "hono";
import { AccessPolicy, TOKEN_PATH } from "../access/policy.ts";
import { tokenEndpoint } from "../access/token-endpoint.ts";
import { BlobCache } from "../cache/blobs.ts";
import { ManifestCache } from "../cache/manifests.ts";
import type { SkiffConfig, UpstreamConfig } from "../config/config.ts";
import { DEFAULT_SETTINGS, type AppSettings } from "../config/serve-settings.ts";
import type { GunzipFactory, UnzstdFactory } from "../convert/decompress.ts";
import type { HasherFactory } from "../hash/hasher.ts";
import { Conversions } from "../lazy/conversions.ts";
import { LayerIndex } from "../lazy/layer-index.ts";
import { LearnedReads } from "../lazy/learned-reads.ts";
import { Upstream, UpstreamUnreachable, type Credentials } from "../oci/upstream.ts";
import { Upstreams } from "../oci/upstreams.ts";
import type { ContentStore } from "../store/store.ts";
import { BoundedStore } from "../store/bounded.ts";
import { keepConfigOf, watchBoundedStore } from "./bounded-store.ts";
import { errorResponse, toOciError } from "./errors.ts";
import { OciError } from "../oci/errors.ts";
import { GzipCache, type Gzip, type GzipBody } from "./gzip.ts";
import { Health } from "./health.ts";
import { lazyHandler } from "./lazy.ts";
import { learnedReadsRoute } from "./learned-reads.ts";
import { createMetrics, type Metrics } from "../util/metrics.ts";
import { rangeShortcut, type RangeShortcut } from "./range-shortcut.ts";
import { apiVersionResponse, registryRoutes } from "./registry.ts";

/** What a runtime entry builds for its platform, and the settings (src/config/serve-settings.ts; their defaults when absent). */
export interface AppOptions extends Partial<AppSettings> {
  config: SkiffConfig;
  store: ContentStore;
  hasher: HasherFactory;
  /** The layer gzip decoder for conversions, when the runtime has a faster one than the built-in. */
  gunzip?: GunzipFactory;
  /** The layer zstd decoder for conversions, when the runtime has a faster one than the built-in (fzstd). */
  unzstd?: UnzstdFactory;
  /** Chunk encoding for conversions, when the runtime can do it off the converting thread. */
  chunkEncoder?: ChunkEncoder;
  /** How the runtime gzips a bootstrap for a node that takes gzip (src/http/gzip.ts; "stream" by default). */
  gzipBody?: GzipBody;
  /** How "stream" compresses a body, when the runtime has a faster way than CompressionStream. */
  gzip?: Gzip;
  /** The fetch that reaches one upstream (its connection pool, its CA bundle); global fetch by default. */
  fetchFor?: (upstream: UpstreamConfig) => typeof fetch;
  /** Fetch larger cold blobs in steps of this many bytes across requests, where the store can (R2; src/cache/blob-steps.ts). */
  blobStepBytes?: number;
  /** Refuse images whose layers hold more inodes than this together when they must be merged (a Worker's memory). */
  maxMergedEntries?: number;
  log?: (message: string) => void;
  now?: () => number;
}

export interface SkiffApp {
  app: Hono;
  /** Answers a cached blob's single ranges and warm lazy data and chunk reads as `app` would, for an entry that can write plain answers. */
  shortcut: RangeShortcut;
  /** Counters, served by the entry on a listener of their own (./ops.ts), not by `app`. */
  metrics: Metrics;
  upstreams: Upstreams<UpstreamConfig>;
  /** What /healthz and /readyz answer; the entry says when shutdown begins. */
  health: Health;
}

export function createApp(opts: AppOptions): SkiffApp {
  const { config, store, hasher, log } = opts;
  const metrics = createMetrics();
  const client = (upstream: UpstreamConfig, credentials: Credentials | undefined) =>
    new Upstream({
      url: upstream.url,
      credentials,
      allowHosts: upstream.allowHosts,
      fetch: opts.fetchFor?.(upstream),
      now: opts.now,
      onExchange: (status) => {
        metrics.inc("skiff_upstream_requests_total", { upstream: upstream.prefix, status: String(status) });
        if (status === 429) metrics.inc("skiff_upstream_rate_limited_total", { upstream: upstream.prefix });
      },
    });
  const upstreams = new Upstreams(config.upstreams, config.defaultUpstream, (u) => client(u, u.credentials));
  const access = new AccessPolicy(config.access, { hasher, metrics, now: opts.now, clientFor: (route, credentials) => client(route.upstream, credentials) });

  const blobs = new BlobCache({ store, upstream: upstreams, hasher, metrics, stepBytes: opts.blobStepBytes, log, now: opts.now });
  const manifests = new ManifestCache({
    store,
    upstream: upstreams,
    hasher,
    metrics,
    tagTtlMs: (repository) => upstreams.configOf(repository).tagTtlSeconds * 1000,
    onStored: store instanceof BoundedStore ? (bytes) => keepConfigOf(store, bytes) : undefined,
    now: opts.now,
    log,
  });
  const conversions = new Conversions({ store, hasher, gunzip: opts.gunzip, unzstd: opts.unzstd, chunkEncoder: opts.chunkEncoder, metrics, blobs, manifests, maxLayerBytes: opts.maxLayerBytes ?? DEFAULT_SETTINGS.maxLayerBytes, maxExpandedBytes: opts.maxExpandedBytes, maxLayerEntries: opts.maxLayerEntries, maxMergedEntries: opts.maxMergedEntries, stepBytes: opts.convertStepBytes, noneFirst: opts.noneFirst ?? true, log, now: opts.now });
  const defaultPlatform = opts.defaultPlatform ?? DEFAULT_SETTINGS.defaultPlatform;
  const layers = new LayerIndex(store);
  if (store instanceof BoundedStore) watchBoundedStore(store, metrics, { blobs, layers }, log);
  const reads = learnedReadsRoute({
    learned: new LearnedReads(store),
    enabled: opts.learnedPrefetch ?? config.learnedPrefetch ?? true,
    conversions,
    manifests,
    hasher,
    metrics,
    defaultPlatform,
  });
  const lazy = lazyHandler({
    store,
    hasher,
    metrics,
    blobs,
    manifests,
    conversions,
    layers,
    reads,
    convertWaitMs: (opts.convertWaitSeconds ?? DEFAULT_SETTINGS.convertWaitSeconds) * 1000,
    defaultPlatform,
    gzip: opts.gzipBody === "runtime" ? { how: "runtime" } : { how: "stream", cache: new GzipCache(undefined, opts.gzip) },
  });

  const app = new Hono();
  app.use(async (c, next) => {
    await next();
    const kind = c.req.path.startsWith("/v2/") ? (/\/(manifests|blobs|tags|_skiff)\//.exec(c.req.path)?.[1]?.replace("_skiff", "lazy") ?? "base") : "other";
    metrics.inc("skiff_http_requests_total", { kind, method: c.req.method, status: String(c.res.status) });
    c.res.headers.set("Docker-Distribution-API-Version", "registry/2.0");
  });

  const health = new Health({ store, upstreams: config.upstreams.length, log, now: opts.now });
  app.get("/healthz", () => health.live());
  app.get("/readyz", () => health.ready());
  app.on(["GET", "POST"], TOKEN_PATH, (c) => tokenEndpoint(c.req.raw, access));
  const base = async (request: Request) => {
    const headers = await access.authorizeBase(request);
    const res = apiVersionResponse(request.method);
    for (const [name, value] of Object.entries(headers)) res.headers.set(name, value);
    return res;
  };
  app.get("/v2", (c) => base(c.req.raw));
  app.get("/v2/", (c) => base(c.req.raw));
  app.route("/v2", registryRoutes({ store, upstreams, access, blobs, manifests, metrics, lazy }));

  app.notFound((c) => errorResponse(new OciError("NAME_UNKNOWN", `no such route: ${c.req.path}`, { status: 404 }), c.req.method));
  app.onError((err, c) => {
    const oci = err instanceof UpstreamUnreachable ? new OciError("UNAVAILABLE", err.message) : toOciError(err);
    if (oci.code === "UNKNOWN") log?.(`internal error on ${c.req.method} ${c.req.path}: ${(err as Error).stack ?? err}`);
    return errorResponse(oci, c.req.method);
  });

  return { app, shortcut: rangeShortcut({ store, upstreams, access, blobs, layers, metrics }), metrics, upstreams, health };
}
