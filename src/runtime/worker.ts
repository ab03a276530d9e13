// Cloudflare Workers entry: the shared app over an R2 bucket, configured from the Worker's vars and
// secrets (docs/deploy.md). One app per isolate, built on its first request; node:crypto hashing and
// node:zlib gunzip and zstd through the nodejs_compat flag (docs/benchmarks.md), at most 6 upstream
// responses open at once per invocation (the platform's limit; each request runs in its own async
// context), and layer conversion and large cold blob fetches in resumable steps.
// There is no second listener for /metrics: it is served only when the secret METRICS_TOKEN is
// set, to requests that bear it.
import type { ExecutionContext } from "hono";
import { AsyncLocalStorage } from "node:async_hooks";
import { resolveConfig } from "../config/config.ts";
import { parseServeSettings, SETTING_NAMES, SettingsError } from "../config/serve-settings.ts";
import { singleUpstreamConfig } from "../config/single.ts";
import { nodeHasher } from "../hash/node.ts";
import { createApp, type SkiffApp } from "../http/app.ts";
import { mergeLimitForMemory } from "../convert/image.ts";
import { entryLimitForMemory } from "../convert/layer.ts";
import { errorResponse } from "../http/errors.ts";
import { metricsResponse } from "../http/ops.ts";
import { OciError } from "../oci/errors.ts";
import { garbageSummary, sweepGarbage } from "../store/gc.ts";
import { R2Store, type R2BucketLike } from "../store/r2.ts";
import { parseDuration } from "../util/duration.ts";
import { parseSize } from "../util/size.ts";
import { limitConnections } from "../util/connection-limit.ts";
import { UPSTREAM_TIMEOUTS, withTimeouts } from "../util/fetch-timeouts.ts";
import { nodeGunzip } from "./node-gunzip.ts";
import { zlibUnzstd } from "./zlib-zstd.ts";

/** The R2 binding, and the vars and secrets: SKIFF_CONFIG, or UPSTREAM and its own; the settings (varOf). */
export type WorkerEnv = { STORE: R2BucketLike; [name: string]: unknown };

/** The var of a setting: its `skiff serve` flag upper-cased (MAX_LAYER_SIZE), but for a few. */
const varOf = (setting: string) => ({ access: "ACCESS_MODE", "allow-host": "ALLOW_HOSTS", config: "SKIFF_CONFIG" })[setting] ?? setting.toUpperCase().replaceAll("-", "_");
// CPU time per invocation is limited, so conversions go in steps: 512m is about 2 s of it without
// chunk compression, 20 s with deflate-raw; and a request waits less for one (docs/deploy.md).
/**
 * A Worker isolate's memory. A layer's tree is held while it converts: MAX_LAYER_ENTRIES defaults to
 * what fits in it (387,000), so a larger layer is refused with an OCI error instead of ending the
 * isolate; so is an image whose layers hold too many entries together to merge (223,000).
 */
const WORKER_MEMORY_BYTES = 128 * 2 ** 20;
const WORKER_DEFAULTS = { "convert-step": "512m", "convert-wait": "25", "max-layer-entries": String(entryLimitForMemory(WORKER_MEMORY_BYTES)) };
// A cold blob larger than this is fetched in steps of it, one per request (src/cache/blob-steps.ts):
// its hash is pure JS, about 0.1 to 0.25 GB/s, so 256m is one to three seconds of CPU time.
const DEFAULT_BLOB_STEP = "256m";

/** The invocation a piece of work belongs to, for the connection limit: work in waitUntil stays in its request's. */
const invocation = new AsyncLocalStorage<object>();

let built: { env: WorkerEnv; app: SkiffApp } | { env: WorkerEnv; error: string } | undefined;

export default {
  async fetch(request: Request, env: WorkerEnv, ctx: ExecutionContext): Promise<Response> {
    if (built?.env !== env) built = build(env);
    if ("error" in built) return errorResponse(new OciError("UNKNOWN", `skiff is misconfigured: ${built.error}`), request.method);
    if (new URL(request.url).pathname === "/metrics" && typeof env.METRICS_TOKEN === "string" && env.METRICS_TOKEN !== "") {
      return bearerMatches(request, env.METRICS_TOKEN) ? metricsResponse(built.app.metrics) : new Response("unauthorized\n", { status: 401, headers: { "WWW-Authenticate": "Bearer" } });
    }
    const app = built.app.app;
    return invocation.run({}, async () => withFixedLength(await app.fetch(request, env, ctx)));
  },

  /**
   * The cron trigger (wrangler.toml): the bucket's garbage (src/store/gc.ts), which an R2 lifecycle
   * rule can't tell apart. Objects written within SWEEP_GRACE (default 1h) are left: a conversion
   * may be between two commits.
   */
  async scheduled(_controller: unknown, env: WorkerEnv): Promise<void> {
    const text = typeof env.SWEEP_GRACE === "string" && env.SWEEP_GRACE !== "" ? env.SWEEP_GRACE : "1h";
    const parsed = parseDuration(text);
    if (parsed === null) console.error(`skiff sweep: SWEEP_GRACE must be a duration like 1h or 3600, got ${JSON.stringify(text)}; using 1h`);
    const garbage = await sweepGarbage(new R2Store(env.STORE), { graceMs: parsed ?? DEFAULT_SWEEP_GRACE_MS });
    console.log(`skiff sweep: ${garbageSummary(garbage)}`);
  },
};

const DEFAULT_SWEEP_GRACE_MS = 3600_000;

/** `Authorization: Bearer TOKEN`, compared in time independent of where a wrong guess differs. */
function bearerMatches(request: Request, token: string): boolean {
  const given = new TextEncoder().encode(request.headers.get("authorization") ?? "");
  const wanted = new TextEncoder().encode(`Bearer ${token}`);
  let diff = given.length ^ wanted.length;
  for (let i = 0; i < wanted.length; i++) diff |= wanted[i]! ^ (given[i] ?? 0);
  return diff === 0;
}

/** workerd's stream of a known length: it sends Content-Length, and a body that ends short is an error. */
declare const FixedLengthStream: new (length: number) => TransformStream<Uint8Array, Uint8Array>;

/**
 * workerd sends a streamed body chunked, ending it cleanly even when the stream fails: a blob cut off
 * upstream would look whole (found by test/e2e/worker-upstream-kill.test.ts). A FixedLengthStream
 * sends the app's Content-Length, and a body cut short breaks the connection, as on Node and Deno.
 */
function withFixedLength(res: Response): Response {
  const length = Number(res.headers.get("content-length") ?? NaN);
  // Outside workerd (the entry called from Node, as the unit tests do) there is none, and no need.
  if (res.body === null || !Number.isSafeInteger(length) || typeof FixedLengthStream === "undefined") return res;
  const fixed = new FixedLengthStream(length);
  res.body.pipeTo(fixed.writable).catch(() => {}); // a failed body errors the readable side as well
  return new Response(fixed.readable, res);
}

function build(env: WorkerEnv): NonNullable<typeof built> {
  const strings = Object.fromEntries(Object.entries(env).filter((e): e is [string, string] => typeof e[1] === "string"));
  const vars = (name: string) => strings[name] || undefined; // a var set to "" is unset
  try {
    const { tagTtlSeconds, ...settings } = parseServeSettings(Object.fromEntries(SETTING_NAMES.map((s) => [s, vars(varOf(s))])), WORKER_DEFAULTS);
    const config = resolveConfig(configDocument(vars), { env: strings, defaultTagTtlSeconds: tagTtlSeconds });
    const upstreamFetch = limitConnections(withTimeouts((input, init) => fetch(input, init), UPSTREAM_TIMEOUTS), 6, () => invocation.getStore());
    const blobStep = vars("BLOB_STEP") ?? DEFAULT_BLOB_STEP;
    const blobStepBytes = parseSize(blobStep);
    if (blobStepBytes === null || blobStepBytes < 1) throw new Error(`BLOB_STEP must be a size above 0 like 256m or 1g, got ${JSON.stringify(blobStep)}`);
    const store = new R2Store(env.STORE);
    const app = createApp({ config, store, hasher: nodeHasher, gunzip: nodeGunzip, unzstd: zlibUnzstd(), gzipBody: "runtime", fetchFor: () => upstreamFetch, blobStepBytes, maxMergedEntries: mergeLimitForMemory(WORKER_MEMORY_BYTES), ...settings, log: (m) => console.log(m) });
    console.log(`skiff ready: upstreams ${config.upstreams.map((u) => `${u.prefix}=${u.url}`).join(" ")}, access ${config.access.mode}`);
    return { env, app };
  } catch (err) {
    const message = err instanceof SettingsError ? err.spelled(varOf) : (err as Error).message;
    console.error(`skiff config: ${message}`);
    return { env, error: message };
  }
}

/** SKIFF_CONFIG, else the config of the one upstream that UPSTREAM and its vars describe. */
function configDocument(vars: (name: string) => string | undefined): unknown {
  if (vars("SKIFF_CONFIG")) return JSON.parse(vars("SKIFF_CONFIG")!);
  const upstream = vars("UPSTREAM");
  if (!upstream) throw new Error("set the UPSTREAM var (or SKIFF_CONFIG)");
  const credentials = { "upstream-user": vars("UPSTREAM_USER"), "upstream-password": vars("UPSTREAM_PASSWORD"), "upstream-public": vars("UPSTREAM_PUBLIC") === "true" };
  const allowHosts = vars("ALLOW_HOSTS")?.split(",").map((h) => h.trim()).filter(Boolean);
  return singleUpstreamConfig({ upstream, ...credentials, access: vars("ACCESS_MODE"), "allow-host": allowHosts });
}
