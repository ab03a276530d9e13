// skiff on Deno (deno.json's tasks) against a real Distribution registry: skopeo and containerd pull
// through it exactly what they get elsewhere, a ≥ 1 GiB layer streams with bounded memory, and the
// lazy API answers byte for byte what skiff on Node answers for the same image (zstd layers too,
// through Deno's own decoder) and takes learned-prefetch reports.
import { readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { Bootstrap } from "../../src/format/decode.ts";
import { toHex } from "../../src/hash/hasher.ts";
import { Containerd, writeMirrorHostsToml } from "./harness/containerd.ts";
import { compareTrees, sha256File } from "./harness/files.ts";
import { buildImage, buildLargeImage, MT, OciLayout, Prng, pushImage, tarArchive, type ImageInfo, type TarEntry } from "./harness/images.ts";
import { childEnv, run } from "./harness/processes.ts";
import { bootstrapWithParams } from "./harness/http.ts";
import { learnedRoundTrip } from "./harness/learned.ts";
import { Registry } from "./harness/registry.ts";
import { diffIdOf, writeImage, type Layer } from "./harness/rootfs.ts";
import { DENO_BIN, REPO_ROOT, Skiff } from "./harness/skiff.ts";
import { skopeoCopy } from "./harness/skopeo.ts";
import { teardown } from "./harness/teardown.ts";
import { tempDir } from "./harness/workdir.ts";
import { pushZstdImages, zstdConversions } from "./harness/zstd-images.ts";

const GiB = 1024 * 1024 * 1024;
const MiB = 1024 * 1024;
const K64 = 64 * 1024;
const TEN_MINUTES = 600_000;
/**
 * Peak RSS allowed to Deno skiff over a 1 GiB pull, the bound Node has in large-layer.test.ts:
 * measured 98-128 MiB over eight runs (Deno 2.9.6, x86-64, 2 cores, some with a core kept busy); a
 * fresh process after its first requests is ~60 MiB. A fifth of the layer held in memory goes over.
 */
const DENO_HWM_LIMIT = 200 * MiB;

const prng = new Prng("deno-lazy");
const file = (name: string, data: Uint8Array | string): TarEntry => ({ name, type: "file", data: typeof data === "string" ? Buffer.from(data) : data });
const dir = (name: string): TarEntry => ({ name, type: "dir" });
const gzLayer = (entries: TarEntry[]): Layer => {
  const tar = tarArchive(entries);
  return { bytes: gzipSync(tar, { level: 6 }), mediaType: MT.layerGzip, diffId: diffIdOf(tar) };
};

let registry: Registry;
let deno: Skiff;
let node: Skiff;
let image: ImageInfo;
const bigDirs: string[] = [];

const DENO_ENV = childEnv({ DENO_NO_UPDATE_CHECKS: "1", NO_COLOR: "1" });

/** `deno task ARGS` from the repository root, as a user runs it. */
function denoTask(args: string[], timeoutMs = 60_000) {
  return run(DENO_BIN, ["task", "-q", ...args], { cwd: REPO_ROOT, timeoutMs, env: DENO_ENV });
}

async function get(url: string, headers: Record<string, string> = {}): Promise<{ status: number; headers: Headers; body: Buffer }> {
  const res = await fetch(url, { headers, signal: AbortSignal.timeout(60_000) });
  return { status: res.status, headers: res.headers, body: Buffer.from(await res.arrayBuffer()) };
}

beforeAll(async () => {
  registry = await Registry.start({ name: "deno-registry" });
  bigDirs.push(registry.storageDir);
  const layout = new OciLayout(tempDir("deno-layout"));
  image = buildImage(layout, { tag: "v1", seed: "deno", layers: 3, filesPerLayer: 4, fileSize: 48 * 1024 });
  await pushImage(layout, "v1", `${registry.hostPort}/e2e/app:v1`);
  deno = await Skiff.start({ upstream: registry.url, runtime: "deno" });
  node = await Skiff.start({ upstream: registry.url, runtime: "node" });
}, 120_000);

afterAll(async () => {
  await deno?.stop();
  await node?.stop();
  await registry?.stop();
  for (const d of bigDirs) rmSync(d, { recursive: true, force: true });
  await teardown();
}, 120_000);

describe("skiff on Deno", () => {
  test("deno task serve: --help prints the usage; a bad flag is one line on stderr and status 2", async () => {
    const help = await denoTask(["serve", "--help"]);
    expect(help.code, help.stderr).toBe(0);
    expect(help.stdout).toMatch(/^Usage: skiff serve /);
    const bad = await denoTask(["serve", "--port", "http"]);
    expect(bad.code).toBe(2);
    expect(bad.stdout).toBe("");
    expect(bad.stderr).toBe('skiff serve: --port must be a whole number, got "http"\n');
    const check = await denoTask(["serve", "--upstream", registry.url, "--check"]);
    expect(check.code, check.stderr).toBe(0);
    expect(check.stdout).toContain(`upstream ${registry.hostPort.split(":")[0]}: ${registry.url} anonymously`);
  }, 60_000);

  test("the Deno entry type-checks (tsc leaves it out: it uses Deno's globals)", async () => {
    const r = await run(DENO_BIN, ["check", "src/runtime/deno.ts", "src/cli/deno.ts"], { cwd: REPO_ROOT, timeoutMs: 120_000, env: DENO_ENV });
    expect(r.code, r.stderr.slice(-4000)).toBe(0);
  }, 120_000);

  test("skopeo through Deno skiff is byte-identical to a direct copy; a second pull comes from its store", async () => {
    expect(deno.runtime).toBe("deno");
    const direct = tempDir("deno-direct");
    await skopeoCopy(`docker://${registry.hostPort}/e2e/app:v1`, `dir:${direct}`);
    for (const pass of ["cold", "warm"]) {
      const logFrom = await registry.settledRequestCount();
      const via = tempDir(`deno-via-${pass}`);
      await skopeoCopy(`docker://${deno.hostPort}/e2e/app:v1`, `dir:${via}`);
      const diff = compareTrees(direct, via);
      expect(diff, pass).toMatchObject({ onlyInA: [], onlyInB: [], different: [] });
      expect(diff.same.length).toBeGreaterThan(image.layers.length);
      await registry.settledRequestCount();
      const blobGets = registry
        .accessLog()
        .slice(logFrom)
        .filter((l) => l.method === "GET" && l.path.includes("/blobs/"));
      // Cold: every layer and the config came from the registry once; warm: none did.
      expect(blobGets.length, pass).toBe(pass === "cold" ? image.layers.length + 1 : 0);
    }
    expect(await deno.metric("skiff_cache_hits_total")).toBeGreaterThan(0);
  }, 120_000);

  test("ctr pulls through Deno skiff as a hosts.toml mirror", async () => {
    const containerd = await Containerd.start();
    try {
      const hostsDir = tempDir("deno-hosts.d");
      writeMirrorHostsToml(hostsDir, registry.hostPort, deno.url);
      const ref = `${registry.hostPort}/e2e/app:v1`;
      const servedBefore = await deno.metric("skiff_served_bytes_total");
      const upstreamBefore = await deno.metric("skiff_upstream_requests_total");
      const logFrom = await registry.settledRequestCount();
      const r = await containerd.pull(ref, { hostsDir });
      expect(r.code, `ctr pull failed:\n${r.stdout}\n${r.stderr}\nskiff log:\n${deno.log().slice(-3000)}`).toBe(0);
      expect((await containerd.images()).find((i) => i.ref === ref)?.digest).toBe(image.manifest.digest);
      const layerBytes = image.layers.reduce((n, l) => n + l.size, 0);
      expect((await deno.metric("skiff_served_bytes_total")) - servedBefore).toBeGreaterThanOrEqual(layerBytes);
      // containerd never went to the registry itself: whatever reached it was skiff's (a tag check).
      await registry.settledRequestCount();
      const lines = registry.accessLog().slice(logFrom);
      expect(lines.length).toBeLessThanOrEqual((await deno.metric("skiff_upstream_requests_total")) - upstreamBefore);
    } finally {
      await containerd.stop();
    }
  }, 180_000);

  test("lazy API: bootstraps, a chunk and data ranges are byte-identical from Node and Deno skiff and `deno task skiff convert`", async () => {
    const layout = new OciLayout(tempDir("deno-lazy-layout"));
    const shared = prng.bytes(2 * K64 + 7);
    const written = writeImage(layout, "v1", [
      gzLayer([dir("bin"), file("bin/multi", prng.bytes(3 * K64 + 1234)), dir("data"), file("data/a", shared), file("data/gone", "x\n")]),
      gzLayer([dir("usr"), file("usr/README", "compressible text, said again and again\n".repeat(4000)), dir("data"), file("data/.wh.gone", ""), file("data/b", shared)]),
    ]);
    await pushImage(layout, "v1", `${registry.hostPort}/e2e/lazy:v1`);
    const out = tempDir("deno-convert");
    const converted = await denoTask(["skiff", "convert", `${layout.dir}:v1`, "--out", out, "--chunk-size", "64k", "--codec", "deflate-raw"]);
    expect(converted.code, converted.stderr).toBe(0);
    const imageJson = JSON.parse(readFileSync(join(out, "image.json"), "utf8")) as { bootstrap: string; params: string };
    const local = readFileSync(join(out, imageJson.bootstrap));

    for (const query of ["", "?chunk-size=64k&codec=deflate-raw"]) {
      const params = query ? imageJson.params : "v1-c20-none";
      const [fromNode, fromDeno] = await Promise.all([node, deno].map((s) => bootstrapWithParams(params, () => get(`${s.url}/v2/e2e/lazy/_skiff/bootstrap/v1${query}`))));
      expect([fromNode!.status, fromDeno!.status], fromDeno!.body.toString().slice(0, 300)).toEqual([200, 200]);
      expect(fromDeno!.body.equals(fromNode!.body), `bootstrap ${query || "(default)"}`).toBe(true);
      expect(fromDeno!.headers.get("skiff-manifest-digest")).toBe(written.manifest.digest);
      if (query === "") continue;
      expect(fromDeno!.body.equals(local), "`deno task skiff convert` wrote the same bootstrap").toBe(true);

      // Every chunk from Deno is Node's; a data range and a multi-chunk range are too.
      const b = Bootstrap.decode(fromDeno!.body);
      expect(fromDeno!.headers.get("skiff-params")).toBe(imageJson.params);
      const layerUrl = (s: Skiff, i: number) => `${s.url}/v2/e2e/lazy/_skiff/layers/${b.blob(b.chunk(i).blob).layerDigest}/${params}`;
      let compressed = 0;
      for (let i = 0; i < b.chunkCount; i++) {
        const rec = b.chunk(i);
        const name = `${toHex(rec.digest)}.${rec.compressed ? "deflate-raw" : "none"}`;
        if (rec.compressed) compressed++;
        const [n, d] = await Promise.all([node, deno].map((s) => get(`${layerUrl(s, i)}/chunks/${name}`)));
        expect([n!.status, d!.status], name).toEqual([200, 200]);
        expect(d!.body.equals(n!.body), name).toBe(true);
        expect(d!.body.length).toBe(rec.storedSize);
        const range = { Range: `bytes=${rec.storedOffset}-${rec.storedOffset + rec.storedSize - 1}` };
        const [nr, dr] = await Promise.all([node, deno].map((s) => get(`${layerUrl(s, i)}/data`, range)));
        expect([nr!.status, dr!.status]).toEqual([206, 206]);
        expect(dr!.body.equals(d!.body), `data range of ${name}`).toBe(true);
        expect(dr!.headers.get("content-range")).toBe(nr!.headers.get("content-range"));
      }
      expect(compressed).toBeGreaterThan(0);
      expect(b.chunkCount).toBeGreaterThan(4);
      const last = b.chunk(b.chunkCount - 1);
      const span = { Range: `bytes=0-${last.storedOffset + last.storedSize - 1}` };
      const [nw, dw] = await Promise.all([node, deno].map((s) => get(`${layerUrl(s, b.chunkCount - 1)}/data`, span)));
      expect(dw!.status).toBe(nw!.status);
      expect(dw!.body.equals(nw!.body)).toBe(true);
    }
  }, 120_000);

  test("learned prefetch: a report POSTed to Deno skiff comes back as the merged list, the foreign digest dropped", async () => {
    const r = await learnedRoundTrip(deno.url, "e2e/app", "v1");
    expect(r.before).toBeNull();
    expect(r.after).toEqual([r.chunks.at(-1), r.chunks[0], r.chunks[1]]);
  }, 60_000);

  test("zstd layers: Deno's decoder (node:zlib's) converts them to Node's bootstrap and data, and refuses a truncated one alike", async () => {
    await pushZstdImages(registry, "e2e/zstd");
    const [fromNode, fromDeno] = await Promise.all([node, deno].map((s) => zstdConversions(s, "e2e/zstd")));
    expect(fromNode!.status, fromNode!.problem).toBe(200);
    expect(fromDeno!.status, fromDeno!.problem).toBe(200);
    expect(fromDeno!.bootstrap.equals(fromNode!.bootstrap)).toBe(true);
    expect(fromNode!.data).toHaveLength(2);
    fromNode!.data.forEach((data, i) => expect(fromDeno!.data[i]!.equals(data), `data blob ${i}`).toBe(true));
    expect(fromNode!.refusal).toEqual({ status: 422, code: "MANIFEST_INVALID" });
    expect(fromDeno!.refusal).toEqual(fromNode!.refusal);
  }, 120_000);

  test("a gzip layer with a trailing zero byte is refused on Deno as on Node (422, nothing converted)", async () => {
    const layer = gzLayer([dir("t"), file("t/data", prng.bytes(100_000))]);
    const layout = new OciLayout(tempDir("deno-trailing"));
    writeImage(layout, "v1", [{ ...layer, bytes: Buffer.concat([layer.bytes, Buffer.alloc(1)]) }]);
    await pushImage(layout, "v1", `${registry.hostPort}/e2e/trailing:v1`);
    const failedBefore = await deno.metric("skiff_conversions_failed_total");
    const answers = await Promise.all([node, deno].map((s) => get(`${s.url}/v2/e2e/trailing/_skiff/bootstrap/v1`)));
    const errors = answers.map((a) => ({ status: a.status, code: (JSON.parse(a.body.toString()) as { errors: { code: string }[] }).errors[0]?.code }));
    expect(errors).toEqual([
      { status: 422, code: "MANIFEST_INVALID" },
      { status: 422, code: "MANIFEST_INVALID" },
    ]);
    expect(await deno.metric("skiff_conversions_failed_total")).toBe(failedBefore + 1);
  }, 60_000);

  test(`a ≥ 1 GiB layer pulls through a fresh Deno skiff intact with its VmHWM < ${DENO_HWM_LIMIT / MiB} MiB`, async () => {
    const layoutDir = tempDir("deno-large-layout");
    bigDirs.push(layoutDir);
    const big = await buildLargeImage(new OciLayout(layoutDir), { tag: "big", seed: "deno-large", layerBytes: GiB });
    await pushImage(big.layout, "big", `${registry.hostPort}/e2e/large:big`, { timeoutMs: TEN_MINUTES });
    rmSync(layoutDir, { recursive: true, force: true }); // the registry has it
    // A process of its own, so its peak memory is this pull's alone.
    const fresh = await Skiff.start({ upstream: registry.url, runtime: "deno" });
    bigDirs.push(fresh.dataDir);
    try {
      const layer = big.layers[0]!;
      expect(layer.size).toBeGreaterThanOrEqual(GiB);
      const out = tempDir("deno-large-pull");
      bigDirs.push(out);
      await skopeoCopy(`docker://${fresh.hostPort}/e2e/large:big`, `dir:${out}`, { timeoutMs: TEN_MINUTES });
      expect(await sha256File(join(out, layer.digest.slice("sha256:".length)))).toBe(layer.digest);
      rmSync(out, { recursive: true, force: true });

      const hwm = fresh.vmHWMBytes();
      console.log(`deno large layer: ${layer.size} bytes; Deno skiff VmHWM ${(hwm / MiB).toFixed(1)} MiB`);
      expect(hwm, `Deno skiff VmHWM ${(hwm / MiB).toFixed(1)} MiB`).toBeLessThan(DENO_HWM_LIMIT);
      expect(await fresh.metric("skiff_served_bytes_total")).toBeGreaterThanOrEqual(layer.size);
      expect(await fresh.metric("skiff_upstream_bytes_total")).toBeGreaterThanOrEqual(layer.size);
      // SIGTERM: a graceful stop with status 0, well within the harness's grace before SIGKILL.
      const t = Date.now();
      await fresh.stop();
      expect(fresh.exitCode).toBe(0);
      expect(Date.now() - t).toBeLessThan(5_000);
    } finally {
      await fresh.stop();
    }
  }, TEN_MINUTES);
});
