// Cloudflare Workers entry: the shared app over an R2 bucket, configured from the Worker's vars and
// secrets (docs/deploy.md). One app per isolate, built on its first request; node:crypto hashing
// through the nodejs_compat flag (faster than crypto.DigestStream here, docs/benchmarks.md), at most
// 6 upstream responses open at once (the platform's limit per invocation), the Node entry's
// upstream timeouts, and layer conversion in resumable steps (CPU time per invocation is limited).
import type { ExecutionContext } from "hono";
import { resolveConfig, type SkiffConfig } from "../config/config.ts";
import { singleUpstreamConfig } from "../config/single.ts";
import { nodeHasher } from "../hash/node.ts";
import { createApp, type SkiffApp } from "../http/app.ts";
import { errorResponse } from "../http/errors.ts";
import { OciError } from "../oci/errors.ts";
import { R2Store, type R2BucketLike } from "../store/r2.ts";
import { limitConnections } from "../util/connection-limit.ts";
import { withTimeouts } from "../util/fetch-timeouts.ts";
import { parseSize } from "../util/size.ts";
import { nodeGunzip } from "./node-gunzip.ts";

export interface WorkerEnv {
  STORE: R2BucketLike;
  /** A whole config document (docs/configuration.md) as JSON text. */
  SKIFF_CONFIG?: string;
  /** Or one upstream: its origin, and optionally credentials (as secrets) and access mode. */
  UPSTREAM?: string;
  UPSTREAM_USER?: string;
  UPSTREAM_PASSWORD?: string;
  UPSTREAM_PUBLIC?: string;
  ACCESS_MODE?: string;
  ALLOW_HOSTS?: string;
  TAG_TTL?: string;
  MAX_LAYER_SIZE?: string;
  MAX_EXPANDED_SIZE?: string;
  MAX_LAYER_ENTRIES?: string;
  CONVERT_WAIT?: string;
  /** Layer content converted per request before the conversion pauses until the next one. */
  CONVERT_STEP?: string;
  PLATFORM?: string;
  [name: string]: unknown;
}

const MAX_CONNECTIONS = 6;
// About 2 s of CPU time without chunk compression, 20 s with deflate-raw (docs/deploy.md).
const DEFAULT_CONVERT_STEP = 512 * 2 ** 20;

let built: { env: WorkerEnv; app: SkiffApp } | { env: WorkerEnv; error: string } | undefined;

export default {
  async fetch(request: Request, env: WorkerEnv, ctx: ExecutionContext): Promise<Response> {
    if (built?.env !== env) built = build(env);
    if ("error" in built) return errorResponse(new OciError("UNKNOWN", `skiff is misconfigured: ${built.error}`), request.method);
    return withFixedLength(await built.app.app.fetch(request, env, ctx));
  },
};

/** workerd's stream of a known length: it sends Content-Length, and a body that ends short is an error. */
declare const FixedLengthStream: new (length: number) => TransformStream<Uint8Array, Uint8Array>;

/**
 * workerd sends a streamed body chunked, dropping the Content-Length the app set, and ends it cleanly
 * even when the stream fails: a blob cut off upstream (a live pull) would reach the client as a
 * complete answer (found by test/e2e/worker-upstream-kill.test.ts). Through a FixedLengthStream the
 * length goes out and a body cut short breaks the connection, as on Node and Deno.
 */
function withFixedLength(res: Response): Response {
  const length = Number(res.headers.get("content-length") ?? NaN);
  // Outside workerd (the entry called from Node, as the unit tests do) there is none, and no need.
  if (res.body === null || !Number.isSafeInteger(length) || typeof FixedLengthStream === "undefined") return res;
  const fixed = new FixedLengthStream(length);
  res.body.pipeTo(fixed.writable).catch(() => {}); // a failed body errors the readable side as well
  return new Response(fixed.readable, res);
}

function build(env: WorkerEnv): { env: WorkerEnv; app: SkiffApp } | { env: WorkerEnv; error: string } {
  try {
      const config = workerConfig(env);
    const upstreamFetch = limitConnections(withTimeouts((input, init) => fetch(input, init), { headersMs: 30_000, idleMs: 60_000 }), MAX_CONNECTIONS);
    const app = createApp({
      config,
      store: new R2Store(env.STORE),
      hasher: nodeHasher,
      gunzip: nodeGunzip,
      fetchFor: () => upstreamFetch,
      maxLayerBytes: sizeVar(env.MAX_LAYER_SIZE, "MAX_LAYER_SIZE", 8 * 2 ** 30),
      maxExpandedBytes: sizeVar(env.MAX_EXPANDED_SIZE, "MAX_EXPANDED_SIZE", 64 * 2 ** 30),
      maxLayerEntries: countVar(env.MAX_LAYER_ENTRIES, "MAX_LAYER_ENTRIES", 1_000_000),
      convertStepBytes: sizeVar(env.CONVERT_STEP, "CONVERT_STEP", DEFAULT_CONVERT_STEP),
      convertWaitSeconds: secondsVar(env.CONVERT_WAIT, "CONVERT_WAIT", 25),
      defaultPlatform: env.PLATFORM,
      log: (message) => console.log(message),
    });
    console.log(`skiff ready: upstreams ${config.upstreams.map((u) => `${u.prefix}=${u.url}`).join(" ")}, access ${config.access.mode}`);
    return { env, app };
  } catch (err) {
    console.error(`skiff config: ${(err as Error).message}`);
    return { env, error: (err as Error).message };
  }
}

function workerConfig(env: WorkerEnv): SkiffConfig {
  const strings: Record<string, string> = {};
  for (const [name, value] of Object.entries(env)) if (typeof value === "string") strings[name] = value;
  const tagTtl = env.TAG_TTL ? secondsVar(env.TAG_TTL, "TAG_TTL", 60) : undefined;
  if (env.ACCESS_MODE && env.ACCESS_MODE !== "open" && env.ACCESS_MODE !== "passthrough") {
    throw new Error(`ACCESS_MODE must be open or passthrough (credentials mode needs SKIFF_CONFIG), got ${JSON.stringify(env.ACCESS_MODE)}`);
  }
  if (env.SKIFF_CONFIG) return resolveConfig(JSON.parse(env.SKIFF_CONFIG), { env: strings, defaultTagTtlSeconds: tagTtl });
  if (!env.UPSTREAM) throw new Error("set the UPSTREAM var (or SKIFF_CONFIG)");
  const raw = singleUpstreamConfig({
    url: env.UPSTREAM,
    credentials: env.UPSTREAM_USER && env.UPSTREAM_PASSWORD ? { username: env.UPSTREAM_USER, password: env.UPSTREAM_PASSWORD } : undefined,
    public: env.UPSTREAM_PUBLIC === "true" ? true : undefined,
    allowHosts: env.ALLOW_HOSTS?.split(",").map((h) => h.trim()).filter(Boolean),
    access: env.ACCESS_MODE === "passthrough" ? "passthrough" : "open",
  });
  return resolveConfig(raw, { env: strings, defaultTagTtlSeconds: tagTtl });
}

function secondsVar(value: string | undefined, name: string, fallback: number): number {
  if (!value) return fallback;
  if (!/^\d{1,7}$/.test(value.trim())) throw new Error(`${name} must be a whole number of seconds, got ${JSON.stringify(value)}`);
  return Number(value.trim());
}

function countVar(value: string | undefined, name: string, fallback: number): number {
  if (!value) return fallback;
  if (!/^[1-9]\d{0,9}$/.test(value.trim())) throw new Error(`${name} must be a whole number above 0, got ${JSON.stringify(value)}`);
  return Number(value.trim());
}

function sizeVar(value: string | undefined, name: string, fallback: number): number {
  if (!value) return fallback;
  const bytes = parseSize(value);
  if (bytes === null || bytes === 0) throw new Error(`${name} must be a size like 500m or 8g, got ${JSON.stringify(value)}`);
  return bytes;
}
