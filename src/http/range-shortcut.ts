// A shortcut for the requests a warm mirror answers most: one byte range of a blob it has cached,
// and the lazy API's reads of converted layers (one range of a data blob, a chunk: lazy-shortcut.ts).
// A runtime entry may offer each request here first and give it to the app when the shortcut
// declines. What the shortcut answers is exactly what the app would answer (the same access
// decision, headers, body and metrics) without web Request/Response objects or routing, which
// cost more than the answer itself on Node. It declines anything it does not fully understand,
// before counting anything, so the app then sees the request as if the shortcut did not exist.
import type { AccessPolicy, RequestHead } from "../access/policy.ts";
import type { BlobCache } from "../cache/blobs.ts";
import { blobKey } from "../store/keys.ts";
import { isValidRepositoryName, parseDigest, splitRegistryPath, type Digest } from "../oci/reference.ts";
import type { UpstreamConfig, UpstreamRoute } from "../config/config.ts";
import type { Upstreams } from "../oci/upstreams.ts";
import type { ContentStore } from "../store/store.ts";
import type { LayerIndex } from "../lazy/layer-index.ts";
import { BufferPool } from "../util/buffer-pool.ts";
import { errorAnswer } from "./errors.ts";
import { OciError } from "../oci/errors.ts";
import type { Metrics } from "../util/metrics.ts";
import { contentRange, parseRange } from "./range.ts";
import { singleRangeHeaders, SMALL_BODY } from "./ranged.ts";
import { storedBlob, type CacheScope } from "./registry.ts";
import type { PlainAnswer } from "./plain-answer.ts";
import { lazyAnswers, parseLazyTarget, type LazyTarget } from "./lazy-shortcut.ts";

/** A request as the shortcut reads it: `target` is the request target (path and query) as sent. */
export interface ShortcutRequest extends RequestHead {
  method: string;
  target: string;
}

export type { PlainAnswer } from "./plain-answer.ts";

export interface ShortcutDeps {
  store: ContentStore;
  upstreams: Upstreams<UpstreamConfig>;
  access: AccessPolicy;
  blobs: BlobCache;
  layers: LayerIndex;
  metrics: Metrics;
}

/** Answers a request, or resolves undefined for the app to answer it. */
export type RangeShortcut = (request: ShortcutRequest) => Promise<PlainAnswer | undefined>;

/** What a blob URL means, worked out once: lazy clients ask for ranges of the same few blobs. */
interface BlobTarget {
  kind: "blobs";
  route: UpstreamRoute;
  digest: Digest;
  /** The 206 headers but the range's own, by cache scope, made on first use. */
  headers: Partial<Record<CacheScope, Record<string, string>>>;
}

const API_VERSION = { "Docker-Distribution-API-Version": "registry/2.0" };
const REMEMBERED_TARGETS = 1024;

export function rangeShortcut(deps: ShortcutDeps): RangeShortcut {
  const targets = new Map<string, BlobTarget | LazyTarget>();
  const buffers = new BufferPool();
  const countHit = deps.metrics.counter("skiff_cache_hits_total", { kind: "blob" });
  const countBytes = deps.metrics.counter("skiff_served_bytes_total", { kind: "blob" });
  const count206 = deps.metrics.counter("skiff_http_requests_total", { kind: "blobs", method: "GET", status: "206" });
  const lazy = lazyAnswers(deps, buffers);

  return async (request) => {
    const { headers } = request;
    if (request.method !== "GET" || !deps.store.readSpan) return;
    // At most one range, and no conditions.
    const rangeHeader = headers.get("range");
    if (rangeHeader?.includes(",") || headers.get("if-range") !== null || headers.get("if-none-match") !== null) return;
    const target = targetOf(request.target);
    if (!target || (target.kind === "blobs" && rangeHeader === null)) return;

    let shareable: boolean;
    try {
      ({ shareable } = await deps.access.decide(request, target.route));
    } catch (err) {
      if (!(err instanceof OciError)) return;
      deps.access.record(err);
      return answered(target.kind, errorAnswer(err));
    }
    if (target.kind === "lazy") return lazy(target, rangeHeader, shareable ? "public" : "private", () => deps.access.record());

    // Only a blob whose entitlement is in memory: anything that needs a lookup goes the long way.
    const info = deps.blobs.remembered(target.route.repository, target.digest);
    if (!info) return;
    const wanted = parseRange(rangeHeader!, info.size);
    if (wanted.kind !== "ranges" || wanted.ranges.length !== 1) return;
    const range = wanted.ranges[0]!;
    const length = range.end - range.start + 1;
    if (length > SMALL_BODY) return;
    const buffer = buffers.take(length);
    // A blob gone from the store, or unreadable, is the app's to answer (and to forget).
    const body = await deps.store.readSpan(blobKey(target.digest), { offset: range.start, length }, buffer).catch(() => null);
    if (body?.byteLength !== length) return void buffers.give(buffer);

    deps.access.record();
    countHit();
    countBytes(length);
    count206();
    const scope: CacheScope = shareable ? "public" : "private";
    target.headers[scope] ??= { ...singleRangeHeaders(storedBlob(deps, target.digest, info.size, scope), range), ...API_VERSION };
    const answer = { ...target.headers[scope], "Content-Range": contentRange(range, info.size), "Content-Length": String(length) };
    return { status: 206, headers: answer, body, written: () => buffers.give(buffer) };
  };

  /** The blob or lazy read a request target names, the way the app routes it; null for anything else. */
  function targetOf(requestTarget: string): BlobTarget | LazyTarget | null {
    const target = targets.get(requestTarget) ?? parseTarget(requestTarget);
    if (target && !targets.has(requestTarget)) {
      if (targets.size >= REMEMBERED_TARGETS) targets.delete(targets.keys().next().value!);
      targets.set(requestTarget, target);
    }
    return target;
  }

  function parseTarget(requestTarget: string): BlobTarget | LazyTarget | null {
    // A query or an escape is the app's to read.
    if (!requestTarget.startsWith("/v2/") || /[?%#]/.test(requestTarget)) return null;
    if (requestTarget.includes("/_skiff/")) return parseLazyTarget(requestTarget.slice(4), routeOf);
    const path = splitRegistryPath(requestTarget.slice(4));
    if (!path || path.kind !== "blobs" || !isValidRepositoryName(path.name)) return null;
    const digest = parseDigest(path.rest);
    const route = digest && routeOf(path.name);
    return route ? { kind: "blobs", route, digest, headers: {} } : null;
  }

  function routeOf(name: string): UpstreamRoute | null {
    try {
      return deps.upstreams.route(name, undefined);
    } catch {
      return null; // no upstream serves the name: the app says so
    }
  }

  function answered(kind: "blobs" | "lazy", answer: PlainAnswer): PlainAnswer {
    deps.metrics.inc("skiff_http_requests_total", { kind, method: "GET", status: String(answer.status) });
    answer.headers = { ...answer.headers, ...API_VERSION };
    return answer;
  }
}
