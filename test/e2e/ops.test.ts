// The operator's side of `skiff serve` on Node and on Deno: /metrics only on its own listener
// (--metrics-address), /healthz and /readyz on the public port (where kubelet probes) and beside
// /metrics, and the flag's usage errors.
import { createServer, type Server } from "node:net";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { run } from "./harness/processes.ts";
import { Registry } from "./harness/registry.ts";
import { denoServeCommand, REPO_ROOT, Skiff, SKIFF_BIN, type SkiffRuntime } from "./harness/skiff.ts";
import { teardown } from "./harness/teardown.ts";
import { tempDir } from "./harness/workdir.ts";

let registry: Registry;

beforeAll(async () => {
  registry = await Registry.start({ name: "ops-registry" });
}, 60_000);

afterAll(async () => {
  await registry?.stop();
  await teardown();
});

async function get(url: string): Promise<{ status: number; type: string | null; text: string }> {
  const res = await fetch(url, { signal: AbortSignal.timeout(10_000) });
  return { status: res.status, type: res.headers.get("content-type"), text: await res.text() };
}

/** `skiff serve ARGS` on `runtime` to its end: a start that fails must exit, not hang. */
function serve(runtime: SkiffRuntime, args: string[]) {
  const [command, ...serveArgs] = runtime === "deno" ? denoServeCommand() : [process.execPath, SKIFF_BIN, "serve"];
  return run(command!, [...serveArgs, "--upstream", registry.url, "--host", "127.0.0.1", "--port", "0", "--data", tempDir("ops-data"), ...args], {
    cwd: REPO_ROOT,
    timeoutMs: 30_000,
    env: { ...process.env, DENO_NO_UPDATE_CHECKS: "1", NO_COLOR: "1" },
  });
}

describe.each(["node", "deno"] as const)("on %s", (runtime) => {
  let skiff: Skiff;

  beforeAll(async () => {
    skiff = await Skiff.start({ upstream: registry.url, runtime });
  }, 60_000);

  afterAll(async () => {
    await skiff?.stop();
  });

  test("the public port answers /healthz and /readyz, and /metrics like any unknown route", async () => {
    expect(await get(`${skiff.url}/healthz`)).toMatchObject({ status: 200, text: "ok\n" });
    expect(await get(`${skiff.url}/readyz`)).toMatchObject({ status: 200, text: "ready\n" });
    const metrics = await get(`${skiff.url}/metrics`);
    expect(metrics.status).toBe(404);
    expect(JSON.parse(metrics.text)).toMatchObject({ errors: [{ code: "NAME_UNKNOWN" }] });
  });

  test("the metrics listener answers /metrics, /healthz and /readyz, and 404 to anything else", async () => {
    expect(skiff.metricsUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(skiff.metricsUrl).not.toBe(skiff.url);
    expect((await get(`${skiff.url}/v2/`)).status).toBe(200);
    const metrics = await get(`${skiff.metricsUrl}/metrics`);
    expect(metrics.status).toBe(200);
    expect(metrics.type).toMatch(/^text\/plain; version=0\.0\.4/);
    // The probes and the 404 above were counted as the public port's requests.
    expect(metrics.text).toMatch(/^skiff_http_requests_total\{kind="base",method="GET",status="200"\} [1-9]/m);
    expect(metrics.text).toMatch(/^skiff_http_requests_total\{kind="other",method="GET",status="404"\} [1-9]/m);
    expect(await get(`${skiff.metricsUrl}/healthz`)).toMatchObject({ status: 200, text: "ok\n" });
    expect(await get(`${skiff.metricsUrl}/readyz`)).toMatchObject({ status: 200, text: "ready\n" });
    for (const path of ["/", "/v2/", `/v2/e2e/app/manifests/v1`, "/metricsx"]) expect((await get(`${skiff.metricsUrl}${path}`)).status, path).toBe(404);
  });

  test("--metrics-address off: no metrics listener, and still no /metrics on the public port", async () => {
    const off = await Skiff.start({ upstream: registry.url, runtime, extraArgs: ["--metrics-address", "off"] });
    try {
      expect(off.metricsUrl).toBeUndefined();
      expect((await get(`${off.url}/metrics`)).status).toBe(404);
      expect((await get(`${off.url}/readyz`)).status).toBe(200);
    } finally {
      await off.stop();
    }
  }, 60_000);

  test("a bad --metrics-address is one line on stderr and status 2; one in use fails the start, which exits", async () => {
    const bad = await serve(runtime, ["--metrics-address", "9107"]);
    expect([bad.code, bad.stdout, bad.stderr]).toEqual([2, "", 'skiff serve: --metrics-address must be HOST:PORT or off, got "9107"\n']);

    const taken: Server = createServer();
    await new Promise<void>((resolve) => taken.listen(0, "127.0.0.1", resolve));
    try {
      const port = (taken.address() as { port: number }).port;
      const busy = await serve(runtime, ["--metrics-address", `127.0.0.1:${port}`]);
      expect(busy.timedOut, "the failed start exited by itself").toBe(false);
      expect(busy.code).toBe(1);
      expect(busy.stdout).toBe("");
      expect(busy.stderr).toMatch(/^skiff serve: .*(EADDRINUSE|in use)/im);
    } finally {
      await new Promise((resolve) => taken.close(resolve));
    }
  }, 60_000);
});
