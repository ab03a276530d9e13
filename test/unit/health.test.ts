// /healthz and /readyz on the public app, the operator's listener (/metrics beside them), the Worker's
// token-gated /metrics, and the serve flags that place and stop them.
import { describe, expect, it } from "vitest";
import { UsageError } from "../../src/cli/args.ts";
import { parseServeOptions } from "../../src/cli/serve-options.ts";
import { resolveConfig } from "../../src/config/config.ts";
import { nodeHasher } from "../../src/hash/node.ts";
import { createApp } from "../../src/http/app.ts";
import { Health } from "../../src/http/health.ts";
import { opsHandler } from "../../src/http/ops.ts";
import worker, { type WorkerEnv } from "../../src/runtime/worker.ts";
import { MemoryStore } from "../../src/store/memory.ts";
import type { R2BucketLike } from "../../src/store/r2.ts";
import type { ContentStore, Upload } from "../../src/store/store.ts";

const CONFIG = { upstreams: { up: { url: "http://r.example" } } };

/** A MemoryStore whose writes fail with `failure` while it is set, counting the puts. */
class FlakyStore extends MemoryStore {
  failure: (Error & { code?: string }) | null = null;
  puts = 0;
  override async put(key: string): Promise<Upload> {
    this.puts++;
    const upload = await super.put(key);
    return {
      ...upload,
      commit: async () => {
        if (this.failure) throw this.failure;
        return upload.commit();
      },
    };
  }
}

const erofs = () => Object.assign(new Error("EROFS: read-only file system, open '/secret/path/data/.tmp/x'"), { code: "EROFS" });

describe("Health", () => {
  it("is live while it serves, and ready once the store takes a write; the probe leaves nothing behind", async () => {
    const store = new MemoryStore();
    const health = new Health({ store, upstreams: 1 });
    expect(health.live().status).toBe(200);
    const res = await health.ready();
    expect([res.status, await res.text()]).toEqual([200, "ready\n"]);
    expect(res.headers.get("cache-control")).toBe("no-store");
    expect(store.keys()).toEqual([]);
  });

  it("is not ready while the store refuses writes, says why without a path, and probes at most every few seconds", async () => {
    const store = new FlakyStore();
    store.failure = erofs();
    let now = 1_000_000;
    const logged: string[] = [];
    const health = new Health({ store, upstreams: 1, now: () => now, log: (m) => logged.push(m) });
    const res = await health.ready();
    const text = await res.text();
    expect([res.status, text]).toEqual([503, "not ready: store not writable (EROFS)\n"]);
    expect(text).not.toMatch(/secret/);
    expect(logged.join("\n")).toMatch(/EROFS/);

    // Probes within a few seconds share the answer: kubelet's probes don't each write to the disk.
    store.failure = null;
    for (let i = 0; i < 5; i++) expect((await health.ready()).status).toBe(503);
    expect(store.puts).toBe(1);
    now += 5_000;
    expect((await health.ready()).status).toBe(200);
    expect(store.puts).toBe(2);
  });

  it("is not ready once shutdown has begun, nor without an upstream", async () => {
    const health = new Health({ store: new MemoryStore(), upstreams: 1 });
    health.stopping();
    const res = await health.ready();
    expect([res.status, await res.text()]).toEqual([503, "not ready: shutting down\n"]);
    expect(health.live().status).toBe(200);
    const none = await new Health({ store: new MemoryStore(), upstreams: 0 }).ready();
    expect([none.status, await none.text()]).toEqual([503, "not ready: no upstream configured\n"]);
  });
});

describe("the public app and the operator's listener", () => {
  const app = (store: ContentStore = new MemoryStore()) => createApp({ config: resolveConfig(CONFIG), store, hasher: nodeHasher });

  it("the public app answers /healthz and /readyz, and /metrics like any unknown route", async () => {
    const store = new FlakyStore();
    const skiff = app(store);
    expect((await skiff.app.request("/healthz")).status).toBe(200);
    expect((await skiff.app.request("/readyz")).status).toBe(200);
    const metrics = await skiff.app.request("/metrics");
    expect(metrics.status).toBe(404);
    expect((await metrics.json()) as object).toMatchObject({ errors: [{ code: "NAME_UNKNOWN" }] });

    const failing = app(Object.assign(new FlakyStore(), { failure: erofs() }));
    const res = await failing.app.request("/readyz");
    expect([res.status, await res.text()]).toEqual([503, "not ready: store not writable (EROFS)\n"]);
    failing.health.stopping();
  });

  it("the operator's listener answers /metrics, /healthz and /readyz only", async () => {
    const skiff = app();
    const ops = opsHandler(skiff);
    const get = (path: string, init?: RequestInit) => ops(new Request(`http://127.0.0.1:9107${path}`, init));
    const metrics = await get("/metrics");
    expect(metrics.status).toBe(200);
    expect(metrics.headers.get("content-type")).toMatch(/^text\/plain; version=0\.0\.4/);
    expect(await metrics.text()).toMatch(/^# TYPE skiff_http_requests_total counter$/m);
    expect((await get("/healthz")).status).toBe(200);
    expect((await get("/readyz")).status).toBe(200);
    const head = await get("/metrics", { method: "HEAD" });
    expect([head.status, await head.text()]).toEqual([200, ""]);
    expect((await get("/metrics", { method: "POST" })).status).toBe(405);
    for (const path of ["/", "/v2/", "/metrics/x", "/constructor", "/__proto__"]) expect((await get(path)).status, path).toBe(404);
    skiff.health.stopping();
    expect((await get("/readyz")).status).toBe(503);
  });
});

describe("the Worker's /metrics", () => {
  const ctx = { waitUntil() {}, passThroughOnException() {}, props: {} };
  const call = (vars: Record<string, string>, headers: Record<string, string> = {}) =>
    worker.fetch(new Request("http://skiff.test/metrics", { headers }), { STORE: {} as R2BucketLike, UPSTREAM: "http://r.example", ...vars } as WorkerEnv, ctx);

  it("is an unknown route without METRICS_TOKEN, and served only to requests that bear the token with it", async () => {
    expect((await call({})).status).toBe(404);
    expect((await call({ METRICS_TOKEN: "" })).status).toBe(404);
    expect((await call({ METRICS_TOKEN: "s3cret" })).status).toBe(401);
    expect((await call({ METRICS_TOKEN: "s3cret" }, { Authorization: "Bearer s3cre" })).status).toBe(401);
    expect((await call({ METRICS_TOKEN: "s3cret" }, { Authorization: "Bearer s3cret!" })).status).toBe(401);
    expect((await call({ METRICS_TOKEN: "s3cret" }, { Authorization: "Basic czNjcmV0" })).status).toBe(401);
    const res = await call({ METRICS_TOKEN: "s3cret" }, { Authorization: "Bearer s3cret" });
    expect(res.status).toBe(200);
    expect(await res.text()).toMatch(/^# TYPE skiff_http_requests_total counter$/m);
  });
});

describe("skiff serve's --metrics-address and --shutdown-timeout", () => {
  const serve = (...argv: string[]) => parseServeOptions(["--upstream", "http://r.example", ...argv], {})!;

  it("metrics on 127.0.0.1:9107 by default; any HOST:PORT, port 0, an IPv6 host in brackets, or off", () => {
    expect(serve().metrics).toEqual({ host: "127.0.0.1", port: 9107 });
    expect(serve("--metrics-address", "0.0.0.0:0").metrics).toEqual({ host: "0.0.0.0", port: 0 });
    expect(serve("--metrics-address", "[::1]:9200").metrics).toEqual({ host: "::1", port: 9200 });
    expect(serve("--metrics-address", "localhost:9107").metrics).toEqual({ host: "localhost", port: 9107 });
    expect(serve("--metrics-address", "off").metrics).toBeNull();
    for (const bad of ["9107", "127.0.0.1", "127.0.0.1:", ":9107", "127.0.0.1:65536", "::1:9107", "http://127.0.0.1:9107", "on", "127.0.0.1:x"]) {
      expect(() => serve("--metrics-address", bad), bad).toThrow(UsageError);
      expect(() => serve("--metrics-address", bad), bad).toThrow(/^--metrics-address must be HOST:PORT or off, got /);
    }
  });

  it("shutdown timeout 25 s by default, a whole number of seconds", () => {
    expect(serve().shutdownTimeoutSeconds).toBe(25);
    expect(serve("--shutdown-timeout", "0").shutdownTimeoutSeconds).toBe(0);
    expect(serve("--shutdown-timeout", "120").shutdownTimeoutSeconds).toBe(120);
    for (const bad of ["-1", "1.5", "soon", "3601"]) expect(() => serve("--shutdown-timeout", bad), bad).toThrow(UsageError);
  });
});
