// `skiff check-ranges` as a child process: exit codes, the table and --json against the range fault
// server (clean, then each fault), usage and fetch errors; then against real servers, which must pass
// every mandatory case: nginx serving a file, a Distribution registry blob, and skiff (a blob and a
// lazy-API data blob). What each real server only WARNs on is pinned, so a change in it shows here.
import { createHash } from "node:crypto";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { createServer, request } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import type { RangeReport } from "../../src/ranges/check.ts";
import { OciLayout, Prng, buildImage, pushImage, type ImageInfo } from "./harness/images.ts";
import { freePort, run, spawnService, stopChild, waitFor, type RunResult } from "./harness/processes.ts";
import { startRangeFaultServer, type RangeFault, type RangeFaultServer } from "./harness/range-fault-server.ts";
import { Registry } from "./harness/registry.ts";
import { SKIFF_BIN, Skiff } from "./harness/skiff.ts";
import { teardown } from "./harness/teardown.ts";
import { tempDir } from "./harness/workdir.ts";

const BODY = new Prng("check-ranges").bytes(300_000);
const DIGEST = `sha256:${createHash("sha256").update(BODY).digest("hex")}`;

// Async (not spawnSync): the fault server answers from this process's event loop.
const cli = (...args: string[]): Promise<RunResult> => run(process.execPath, [SKIFF_BIN, "check-ranges", ...args], { timeoutMs: 60_000 });

async function checkJson(url: string, ...args: string[]): Promise<{ code: number | null; report: RangeReport; stderr: string }> {
  const r = await cli(url, "--json", ...args);
  return { code: r.code, report: JSON.parse(r.stdout) as RangeReport, stderr: r.stderr };
}

/** The table row of `name`: [kind, result, detail]. */
function row(stdout: string, name: string): string[] {
  const line = stdout.split("\n").find((l) => l.startsWith(`${name} `));
  if (line === undefined) throw new Error(`no row ${name} in:\n${stdout}`);
  return line.slice(name.length).trim().split(/\s{2,}/);
}

const byResult = (r: RangeReport, result: string) => r.cases.filter((c) => c.result === result).map((c) => c.name);

afterAll(teardown);

describe("against the range fault server", () => {
  let server: RangeFaultServer;
  beforeAll(async () => {
    server = await startRangeFaultServer({ body: BODY, path: `/v2/e2e/blobs/${DIGEST}` });
  });
  afterAll(() => server?.close());

  test("a correct server: exit 0, every row PASS, the digest checked", async () => {
    server.setFault("none");
    const r = await cli(server.url);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toBe("");
    const lines = r.stdout.trim().split("\n");
    expect(lines[0]).toBe(`${server.url}  (300000 bytes, ${DIGEST})`);
    expect(lines[2]).toMatch(/^CASE +KIND +RESULT +DETAIL$/);
    expect(lines.at(-1)).toBe("OK: no case failed");
    expect(row(r.stdout, "full-get")).toEqual(["mandatory", "PASS", "200, 300000 bytes, sha256 matches the digest"]);
    expect(row(r.stdout, "single-range")).toEqual(["mandatory", "PASS", "206 bytes 100000-104095/300000, 4096 bytes match"]);
    expect(row(r.stdout, "suffix")).toEqual(["advisory", "PASS", "206 bytes 299900-299999/300000, 100 bytes match"]);
    expect(lines.filter((l) => / (PASS|WARN|FAIL) /.test(l))).toHaveLength(15);
  });

  const FAULTS: [RangeFault, string, string][] = [
    ["full-body", "single-range", "200 where 206 was due (Range ignored, full body sent)"],
    ["wrong-content-range", "single-range", 'wrong Content-Range "bytes 100001-104096/300000" (want "bytes 100000-104095/300000")'],
    ["short-body", "single-range", "short body: 4095 of 4096 bytes"],
    ["long-body", "single-range", "long body: more than 4096 bytes"],
    ["no-clamp", "clamp", "416 for a satisfiable range (want 206 bytes 299990-299999/300000)"],
    ["broken-multipart", "multi-range", 'part "bytes 21-30/300000": byte 21 differs from the full GET'],
    ["corrupt-body", "single-range", "body differs from the full GET at byte 102048"],
  ];
  test.each(FAULTS)("fault %s: exit 1, %s FAIL in the table and named on stderr", async (fault, name, detail) => {
    server.setFault(fault);
    const r = await cli(server.url);
    expect(r.code, r.stdout).toBe(1);
    expect(row(r.stdout, name)).toEqual([expect.any(String), "FAIL", detail]);
    expect(r.stdout.trim().split("\n").at(-1)).toMatch(new RegExp(`^FAIL: .*\\b${name}\\b`));
    expect(r.stderr).toMatch(new RegExp(`^skiff check-ranges: failed: .*\\b${name}\\b.*\n$`));
  });

  test("--json: url, size and every case; the same exit codes", async () => {
    server.setFault("none");
    const ok = await checkJson(server.url);
    expect(ok.code).toBe(0);
    expect(ok.report).toMatchObject({ url: server.url, size: 300_000, digest: DIGEST, ok: true });
    expect(ok.report.cases).toHaveLength(15);
    expect(ok.report.cases[0]).toEqual({ name: "head", kind: "advisory", result: "PASS", ok: true, detail: "200, Content-Length 300000" });
    server.setFault("no-clamp");
    const bad = await checkJson(server.url);
    expect(bad.code).toBe(1);
    expect(bad.report.ok).toBe(false);
    expect(bad.report.cases.filter((c) => !c.ok).map((c) => c.name)).toEqual(["clamp"]);
  });

  test("--digest overrides the URL's; a mismatch fails full-get", async () => {
    server.setFault("none");
    const r = await cli(server.url, "--digest", `sha256:${"1".repeat(64)}`);
    expect(r.code).toBe(1);
    expect(row(r.stdout, "full-get")).toEqual(["mandatory", "FAIL", `digest mismatch: body is ${DIGEST}, URL says sha256:${"1".repeat(64)}`]);
  });

  test("--header is sent with every request (a bearer token is enough for a protected blob)", async () => {
    server.setFault("none");
    // A gate in front of the fault server: 401 unless the request carries the token.
    const target = new URL(server.url);
    const gate = createServer((req, res) => {
      if (req.headers.authorization !== "Bearer s3cret") return void res.writeHead(401, { "content-length": "0" }).end();
      const up = request({ host: target.hostname, port: target.port, path: req.url, method: req.method, headers: req.headers }, (r) => {
        res.writeHead(r.statusCode ?? 502, r.headers);
        r.pipe(res);
      });
      up.on("error", () => res.destroy());
      req.pipe(up);
    });
    await new Promise<void>((ok) => gate.listen(0, "127.0.0.1", ok));
    try {
      const url = `http://127.0.0.1:${(gate.address() as AddressInfo).port}${target.pathname}`;
      const before = server.requests;
      const r = await cli(url, "--header", "Authorization: Bearer s3cret", "--timeout", "5");
      expect(r.code, r.stderr).toBe(0);
      expect(server.requests - before).toBe(12); // HEAD, GET and 10 ranged GETs, all let through
      const denied = await cli(url);
      expect(denied.code).toBe(1);
      expect(denied.stderr).toBe(`skiff check-ranges: GET ${url} answered 401 Unauthorized\n`);
    } finally {
      gate.closeAllConnections();
      await new Promise((done) => gate.close(done));
    }
  });

  test("usage errors exit 2 with one line", async () => {
    for (const args of [[], ["a", "b"], ["ftp://127.0.0.1/x"], [server.url, "--header", "no-colon"], [server.url, "--timeout", "0"], [server.url, "--bogus"], [server.url, "--digest", "md5:00"]]) {
      const r = await cli(...args);
      expect(r.code, args.join(" ")).toBe(2);
      expect(r.stderr, args.join(" ")).toMatch(/^skiff check-ranges: [^\n]+\n$/);
      expect(r.stdout).toBe("");
    }
  });

  test("--help exits 0 and lists every case with its kind", async () => {
    const r = await cli("--help");
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^Usage: skiff check-ranges URL/);
    expect(r.stdout).toMatch(/^ {2}clamp +mandatory +readers round reads up/m);
    expect(r.stdout).toMatch(/^ {2}multi-range +advisory /m);
  });

  test("an unreachable URL and a 404 GET: one line on stderr, exit 1", async () => {
    const port = await freePort();
    const down = await cli(`http://127.0.0.1:${port}/blob`);
    expect(down.code).toBe(1);
    expect(down.stderr).toMatch(new RegExp(`^skiff check-ranges: cannot reach http://127.0.0.1:${port}/blob: fetch failed: .*ECONNREFUSED.*\n$`));
    const missing = server.url.replace(/sha256:.*/, "nothing");
    const gone = await checkJson(missing);
    expect(gone.code).toBe(1);
    expect(gone.stderr).toBe(`skiff check-ranges: GET ${missing} answered 404 Not Found\n`);
    expect(gone.report).toMatchObject({ url: missing, ok: false, cases: [] });
  });
});

/** Run the CLI; log its table (the report lists what each server only warns on); expect exit 0. */
async function passes(url: string, ...args: string[]): Promise<RangeReport> {
  const table = await cli(url, ...args);
  console.log(table.stdout);
  expect(table.code, `${table.stdout}\n${table.stderr}`).toBe(0);
  const { code, report } = await checkJson(url, ...args);
  expect(code).toBe(0);
  expect(byResult(report, "FAIL")).toEqual([]);
  return report;
}

describe("against nginx", () => {
  let nginx: { url: string; stop: () => Promise<void> } | undefined;
  beforeAll(async () => {
    nginx = await startNginx(BODY, `blobs/${DIGEST}`);
  });
  afterAll(() => nginx?.stop());

  test("a file: every mandatory case passes; invalid ranges get 416", async () => {
    const r = await passes(nginx!.url);
    expect(r).toMatchObject({ size: BODY.length, digest: DIGEST });
    expect(byResult(r, "WARN")).toEqual(["invalid-syntax", "reversed-range"]);
  });
});

describe("against a Distribution registry and skiff", () => {
  let registry: Registry;
  let skiff: Skiff;
  let image: ImageInfo;
  const REPO = "e2e/check-ranges";

  beforeAll(async () => {
    registry = await Registry.start({ name: "check-ranges-registry" });
    const layout = new OciLayout(tempDir("check-ranges-layout"));
    image = buildImage(layout, { tag: "v1", seed: "check-ranges", layers: 2, filesPerLayer: 1, fileSize: 200_000 });
    await pushImage(layout, "v1", `${registry.hostPort}/${REPO}:v1`);
    skiff = await Skiff.start({ upstream: registry.url });
  });
  afterAll(async () => {
    await skiff?.stop();
    await registry?.stop();
  });

  test("a registry blob: every mandatory case passes; invalid ranges get 416", async () => {
    const layer = image.layers[0]!;
    const r = await passes(`${registry.url}/v2/${REPO}/blobs/${layer.digest}`);
    expect(r).toMatchObject({ size: layer.size, digest: layer.digest });
    expect(byResult(r, "WARN")).toEqual(["invalid-syntax", "reversed-range"]);
  });

  test("a blob through skiff", async () => {
    const layer = image.layers[1]!;
    const r = await passes(`${skiff.url}/v2/${REPO}/blobs/${layer.digest}`);
    expect(r).toMatchObject({ size: layer.size, digest: layer.digest });
    expect(byResult(r, "WARN")).toEqual([]);
  });

  test("a lazy-API data blob through skiff", async () => {
    const boot = await fetch(`${skiff.url}/v2/${REPO}/_skiff/bootstrap/v1`, { signal: AbortSignal.timeout(60_000) });
    await boot.arrayBuffer();
    expect(boot.status).toBe(200);
    const params = boot.headers.get("skiff-params");
    const url = `${skiff.url}/v2/${REPO}/_skiff/layers/${image.layers[0]!.digest}/${params}/data`;
    // The full body is checked against its sha256 with --digest: the URL names the layer, and the
    // data blob's ETag its data digest, not the body's.
    const whole = await fetch(url, { signal: AbortSignal.timeout(10_000) });
    const digest = `sha256:${createHash("sha256").update(new Uint8Array(await whole.arrayBuffer())).digest("hex")}`;
    const r = await passes(url, "--digest", digest);
    expect(r.digest).toBe(digest);
    expect(byResult(r, "WARN")).toEqual([]);
  });
});

/** nginx (Debian's package) on a free loopback port, serving `body` at /<name>; every path in a temp dir. */
async function startNginx(body: Uint8Array, name: string): Promise<{ url: string; stop: () => Promise<void> }> {
  const dir = tempDir("nginx");
  const port = await freePort();
  mkdirSync(join(dir, "www", name, ".."), { recursive: true });
  writeFileSync(join(dir, "www", name), body);
  const conf = join(dir, "nginx.conf");
  writeFileSync(
    conf,
    [
      "daemon off;",
      "master_process off;", // one process: stopped with the child, and reads the temp dir as we do
      `pid ${join(dir, "nginx.pid")};`,
      `error_log ${join(dir, "error.log")} info;`,
      "events { worker_connections 64; }",
      "http {",
      `  access_log ${join(dir, "access.log")};`,
      ...["client_body", "proxy", "fastcgi", "uwsgi", "scgi"].map((t) => `  ${t}_temp_path ${join(dir, `${t}_temp`)};`),
      "  default_type application/octet-stream;",
      `  server { listen 127.0.0.1:${port}; root ${join(dir, "www")}; }`,
      "}",
    ].join("\n"),
  );
  const child = spawnService("nginx", ["-p", dir, "-c", conf, "-e", join(dir, "error.log")], { stdio: "ignore" });
  let spawnError: Error | undefined;
  child.once("error", (e) => (spawnError = e));
  const url = `http://127.0.0.1:${port}/${name}`;
  const log = () => {
    try {
      return readFileSync(join(dir, "error.log"), "utf8").slice(-2000);
    } catch {
      return "";
    }
  };
  await waitFor(`nginx on port ${port}`, async () => {
    if (spawnError) throw new Error(`cannot run nginx (Debian package nginx; test/run.sh installs it): ${spawnError.message}`);
    if (child.exitCode !== null) throw new Error(`nginx exited (${child.exitCode}): ${log()}`);
    const res = await fetch(url, { method: "HEAD", signal: AbortSignal.timeout(2_000) });
    if (res.status !== 200) throw new Error(`HEAD ${url}: ${res.status}; ${log()}`);
    return true;
  });
  return { url, stop: () => stopChild(child) };
}
