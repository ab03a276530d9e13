// `skiff bench ranges` against the range fault server: a correct server gives requests and no
// errors; each fault is counted under its kind (a corrupt body only with --reference, which is what
// the reference is for). The engine in-process, then the CLI as a child process (needs the build).
import { randomBytes } from "node:crypto";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { runRangeBench, type ErrorKind, type RangeBenchOptions } from "../../src/bench/ranges.ts";
import { freePort, run, type RunResult } from "./harness/processes.ts";
import { startRangeFaultServer, type RangeFault, type RangeFaultServer } from "./harness/range-fault-server.ts";
import { SKIFF_BIN } from "./harness/skiff.ts";
import { teardown } from "./harness/teardown.ts";
import { tempDir } from "./harness/workdir.ts";

const BODY = randomBytes(1_000_003); // not a multiple of any range size: the last ranges are clamped
let server: RangeFaultServer;
let referenceFile: string;

beforeAll(async () => {
  server = await startRangeFaultServer({ body: BODY });
  referenceFile = join(tempDir("bench-ranges"), "blob");
  writeFileSync(referenceFile, BODY);
});
afterAll(async () => {
  await server?.close();
  await teardown();
});

const bench = (o: Partial<RangeBenchOptions> = {}) =>
  runRangeBench({ url: server.url, durationMs: 20_000, maxRequests: 200, concurrency: 4, size: { min: 4096, max: 65536 }, pattern: "random", ...o });

const onlyKind = (errorsByKind: Record<ErrorKind, number>, kind: ErrorKind, n: number) =>
  expect(Object.fromEntries(Object.entries(errorsByKind).filter(([, v]) => v > 0))).toEqual({ [kind]: n });

describe("engine", () => {
  test("a correct server: every request checked, no errors, with each pattern", async () => {
    server.setFault("none");
    for (const pattern of ["random", "sequential", [{ offset: 0, length: 10 }, { offset: 999_990, length: 4096 }]] as const) {
      const r = await bench({ pattern, reference: BODY });
      expect(r.errors, JSON.stringify(r.firstErrors)).toBe(0);
      expect(r.requests).toBe(200);
      expect(r.blobSize).toBe(BODY.length);
      expect(r.bytes).toBeGreaterThan(0);
      expect(r.p50).toBeGreaterThan(0);
      expect(r.p50).toBeLessThanOrEqual(r.p99);
      expect(r.p99).toBeLessThanOrEqual(r.max);
    }
  });

  test("a corrupt body is an error only against the reference", async () => {
    server.setFault("corrupt-body");
    expect((await bench()).errors).toBe(0);
    const r = await bench({ reference: BODY });
    onlyKind(r.errorsByKind, "body-mismatch", 200);
    expect(r.errors).toBe(200);
  });

  test.each([
    ["wrong-content-range", "content-range"],
    ["short-body", "short"],
    ["long-body", "long"],
    ["full-body", "status"],
  ] as [RangeFault, ErrorKind][])("fault %s is counted as %s", async (fault, kind) => {
    server.setFault(fault);
    const r = await bench({ reference: BODY });
    onlyKind(r.errorsByKind, kind, 200);
    expect(r.firstErrors[kind]).toMatch(/^bytes=\d+-\d+: /);
  });

  test("the same seed picks the same ranges", async () => {
    server.setFault("none");
    const a = await bench({ concurrency: 1, maxRequests: 50, seed: 7 });
    const b = await bench({ concurrency: 1, maxRequests: 50, seed: 7 });
    const c = await bench({ concurrency: 1, maxRequests: 50, seed: 8 });
    expect(a.bytes).toBe(b.bytes);
    expect(a.bytes).not.toBe(c.bytes);
  });
});

describe("skiff bench ranges (CLI)", () => {
  // Async (not spawnSync): the fault server answers from this process's event loop.
  const cli = (...args: string[]): Promise<RunResult> => run(process.execPath, [SKIFF_BIN, "bench", "ranges", ...args], { timeoutMs: 60_000 });
  const common = ["--duration", "10s", "--requests", "300", "--concurrency", "8", "--size", "random:1k-64k"];

  test("a correct server: exit 0 and the JSON report", async () => {
    server.setFault("none");
    const r = await cli(server.url, ...common, "--reference", referenceFile, "--json");
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toBe("");
    const report = JSON.parse(r.stdout);
    expect(report.requests).toBe(300);
    expect(report.errors).toBe(0);
    for (const k of ["requests", "errors", "rps", "mbps", "p50", "p90", "p99", "p999", "max", "ttfbP50", "ttfbP99"]) expect(typeof report[k], k).toBe("number");
    expect(report.rps).toBeGreaterThan(0);
    expect(report.errorsByKind).toEqual({ status: 0, "content-range": 0, short: 0, long: 0, "body-mismatch": 0, network: 0, timeout: 0 });
    expect(report.params).toMatchObject({ url: server.url, blobSize: BODY.length, concurrency: 8, size: "random:1k-64k", pattern: "random", seed: 1 });
  });

  test("a corrupt body: exit 1, counted as body-mismatch", async () => {
    server.setFault("corrupt-body");
    const r = await cli(server.url, ...common, "--reference", referenceFile, "--json");
    expect(r.code).toBe(1);
    const report = JSON.parse(r.stdout);
    expect(report.errors).toBe(300);
    expect(report.errorsByKind["body-mismatch"]).toBe(300);
  });

  test("the table names the errors by kind", async () => {
    server.setFault("short-body");
    const r = await cli(server.url, ...common, "--pattern", "sequential");
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/^ {2}errors +300$/m);
    expect(r.stdout).toMatch(/^ {4}short +300 +first: bytes=\d+-\d+: \d+ of \d+ bytes$/m);
  });

  test("usage errors exit 2 and an unreachable server 1, each with one line", async () => {
    for (const args of [["--size", "big"], ["--duration", "forever"], ["--header", "no colon"], ["--pattern", join(tempDir("bench-ranges"), "missing")]]) {
      const r = await cli(server.url, ...args);
      expect(r.code, args.join(" ")).toBe(2);
      expect(r.stderr).toMatch(/^skiff bench: [^\n]+\n$/);
    }
    const r = await cli(`http://127.0.0.1:${await freePort()}/blob`);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^skiff bench: [^\n]+\n$/);
  });
});
