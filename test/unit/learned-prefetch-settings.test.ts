// The learned-prefetch setting: `skiff serve --learned-prefetch on|off` and `--no-learned-prefetch`,
// the config file's `learnedPrefetch`, the Worker's LEARNED_PREFETCH var; a flag or var wins over
// the config file, and with the setting off the route answers 404 as if it did not exist.
// Also `--none-first on|off` (docs/api.md, "None first"), parsed by the same rules.
import { describe, expect, it } from "vitest";
import { UsageError } from "../../src/cli/args.ts";
import { parseServeOptions } from "../../src/cli/serve-options.ts";
import { ConfigError, resolveConfig } from "../../src/config/config.ts";
import { nodeHasher } from "../../src/hash/node.ts";
import { createApp } from "../../src/http/app.ts";
import worker, { type WorkerEnv } from "../../src/runtime/worker.ts";
import { MemoryStore } from "../../src/store/memory.ts";
import type { R2BucketLike } from "../../src/store/r2.ts";

const READS = `/v2/team/app/_skiff/images/sha256:${"ab".repeat(32)}/v1-c20-none/reads`;
const CONFIG = { upstreams: { local: { url: "http://127.0.0.1:1" } } };

async function codeOf(res: Response): Promise<[number, string]> {
  return [res.status, ((await res.json()) as { errors: { code: string }[] }).errors[0]!.code];
}

describe("learned-prefetch setting", () => {
  it("skiff serve: not given by default; on/off, --no-learned-prefetch; a bad value or both flags are usage errors", () => {
    const serve = (...argv: string[]) => parseServeOptions(["--upstream", "http://r.example", ...argv], {})!.settings.learnedPrefetch;
    expect(serve()).toBeUndefined();
    expect(serve("--learned-prefetch", "off")).toBe(false);
    expect(serve("--learned-prefetch", "on")).toBe(true);
    expect(serve("--no-learned-prefetch")).toBe(false);
    expect(() => serve("--learned-prefetch", "maybe")).toThrow(/--learned-prefetch must be on or off/);
    expect(() => serve("--learned-prefetch", "on", "--no-learned-prefetch")).toThrow(UsageError);
  });

  it("the config file's learnedPrefetch is a boolean", () => {
    expect(resolveConfig(CONFIG).learnedPrefetch).toBeUndefined();
    expect(resolveConfig({ ...CONFIG, learnedPrefetch: false }).learnedPrefetch).toBe(false);
    expect(() => resolveConfig({ ...CONFIG, learnedPrefetch: "no" })).toThrow(ConfigError);
    expect(() => resolveConfig({ ...CONFIG, learnedPrefetch: "no" })).toThrow(/^learnedPrefetch: must be true or false/);
  });

  it("off in the config: the route is 404 NAME_UNKNOWN; a setting of on wins over the config (then 404 MANIFEST_UNKNOWN: nothing learned)", async () => {
    const app = (config: object, learnedPrefetch?: boolean) => createApp({ config: resolveConfig(config), store: new MemoryStore(), hasher: nodeHasher, learnedPrefetch }).app;
    expect(await codeOf(await app({ ...CONFIG, learnedPrefetch: false }).request(READS))).toEqual([404, "NAME_UNKNOWN"]);
    expect(await codeOf(await app({ ...CONFIG, learnedPrefetch: false }).request(READS, { method: "POST", body: "x" }))).toEqual([404, "NAME_UNKNOWN"]);
    expect(await codeOf(await app({ ...CONFIG, learnedPrefetch: false }, true).request(READS))).toEqual([404, "MANIFEST_UNKNOWN"]);
    expect(await codeOf(await app(CONFIG, false).request(READS))).toEqual([404, "NAME_UNKNOWN"]);
    expect(await codeOf(await app(CONFIG).request(READS))).toEqual([404, "MANIFEST_UNKNOWN"]);
  });

  it("the Worker's LEARNED_PREFETCH var", async () => {
    const ctx = { waitUntil() {}, passThroughOnException() {}, props: {} };
    const call = (vars: Record<string, string>) => worker.fetch(new Request(`http://skiff.test${READS}`), { STORE: {} as R2BucketLike, UPSTREAM: "http://r.example", ...vars } as WorkerEnv, ctx);
    expect(await codeOf(await call({ LEARNED_PREFETCH: "off" }))).toEqual([404, "NAME_UNKNOWN"]);
    const bad = await call({ LEARNED_PREFETCH: "maybe" });
    expect(bad.status).toBe(500);
    expect(await bad.text()).toMatch(/LEARNED_PREFETCH must be on or off/);
  });
});

describe("none-first setting", () => {
  it("skiff serve: not given by default (the app's default is on); on/off; a bad value is a usage error", () => {
    const serve = (...argv: string[]) => parseServeOptions(["--upstream", "http://r.example", ...argv], {})!.settings.noneFirst;
    expect(serve()).toBeUndefined();
    expect(serve("--none-first", "off")).toBe(false);
    expect(serve("--none-first", "on")).toBe(true);
    expect(() => serve("--none-first", "sometimes")).toThrow(/--none-first must be on or off/);
  });
});
