// The lazy API against a real Distribution registry: image bootstraps converted on first request
// (byte-identical to `skiff convert` of the same OCI layout), content-addressed chunk URLs and data
// blobs by range, single flight under 50 concurrent first requests, shared base layers converted
// once, failures that publish nothing and leave no lock behind, the proxy's limits (layer size,
// convert wait), repository scoping, and `skiff inspect` of a proxy URL.
import { createHash } from "node:crypto";
import { existsSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { codecFromId, decodeChunk } from "../../src/format/codec.ts";
import { Bootstrap } from "../../src/format/decode.ts";
import { toHex } from "../../src/hash/hasher.ts";
import { listAllPaths } from "./harness/files.ts";
import { bootstrapWithParams, parseByteranges } from "./harness/http.ts";
import { MT, OciLayout, Prng, pushImage, sha256, tarArchive, type TarEntry } from "./harness/images.ts";
import { Registry } from "./harness/registry.ts";
import { diffIdOf, skiff as cli, writeImage, type Layer } from "./harness/rootfs.ts";
import { parseMetrics, Skiff } from "./harness/skiff.ts";
import { teardown } from "./harness/teardown.ts";
import { tempDir } from "./harness/workdir.ts";

const K64 = 64 * 1024;
const IMMUTABLE = "public, max-age=31536000, immutable";
const BOOTSTRAP_TYPE = "application/vnd.skiff.bootstrap.v1";
const prng = new Prng("lazy-api");

// Content of the three-layer image: a multi-chunk file, the same bytes under two names and again
// in another layer, compressible text (compressed chunks with deflate-raw) next to random bytes
// (kept raw), an empty file, a file replaced and one deleted by a whiteout in an upper layer.
const MULTI = prng.bytes(3 * K64 + 1234);
const DUP = prng.bytes(2 * K64 + 7);
const TEXT = Buffer.from("compressible text, said again and again\n".repeat(4000));
const SMALL = prng.bytes(5000);

const file = (name: string, data: Uint8Array | string, mode?: number): TarEntry => ({ name, type: "file", data: typeof data === "string" ? Buffer.from(data) : data, mode });
const dir = (name: string): TarEntry => ({ name, type: "dir" });
const gzLayer = (entries: TarEntry[]): Layer => {
  const tar = tarArchive(entries);
  return { bytes: gzipSync(tar, { level: 6 }), mediaType: MT.layerGzip, diffId: diffIdOf(tar) };
};

const APP_LAYERS = [
  gzLayer([
    dir("etc"),
    file("etc/hostname", "lazy\n"),
    file("etc/empty", ""),
    dir("bin"),
    file("bin/multi", MULTI, 0o755),
    dir("data"),
    file("data/dup-a", DUP),
    file("data/dup-b", DUP),
    file("data/gone", "deleted above\n"),
  ]),
  gzLayer([dir("usr"), dir("usr/share"), file("usr/share/README", TEXT), file("usr/share/small", SMALL), dir("etc"), file("etc/hostname", "replaced\n")]),
  gzLayer([dir("data"), file("data/.wh.gone", ""), file("data/dup-c", DUP), dir("opt"), file("opt/note", "top layer\n")]),
];

interface InspectJson {
  blobs: { layerDigest: string }[];
  entries: { path: string; type: string; size: number; chunks?: { digest: string }[] }[];
}

let registry: Registry;
let proxy: Skiff;
let layout: OciLayout;
let app: { manifest: string; layers: string[] };
/** `skiff convert` outputs of app:v1: DIR and its image bootstrap bytes, by query string. */
const local = new Map<string, { dir: string; bootstrap: Buffer }>();
const CONVERSIONS = [
  { query: "?chunk-size=64k", args: ["--chunk-size", "64k"], params: "v1-c16-none" },
  { query: "", args: [], params: "v1-c20-none" },
  { query: "?chunk-size=64k&codec=deflate-raw", args: ["--chunk-size", "64k", "--codec", "deflate-raw"], params: "v1-c16-deflate-raw" },
] as const;

// ---- helpers ------------------------------------------------------------------------------------

interface Got {
  status: number;
  headers: Headers;
  body: Buffer;
}

async function get(url: string, headers: Record<string, string> = {}): Promise<Got> {
  const res = await fetch(url, { headers, signal: AbortSignal.timeout(60_000) });
  return { status: res.status, headers: res.headers, body: Buffer.from(await res.arrayBuffer()) };
}

const bootstrapUrl = (s: Skiff, name: string, ref: string, query = "") => `${s.url}/v2/${name}/_skiff/bootstrap/${ref}${query}`;
const layerUrl = (s: Skiff, name: string, layer: string, params: string) => `${s.url}/v2/${name}/_skiff/layers/${layer}/${params}`;

/**
 * `body` is the data blob `layer` describes: the data digest is the sha256 of its chunk table, and
 * its chunks, laid end to end, decode to the content their records name.
 */
async function expectDataBlob(layer: Bootstrap, body: Buffer, dataDigest: Uint8Array): Promise<void> {
  expect(createHash("sha256").update(layer.chunkTable()).digest("hex")).toBe(toHex(dataDigest));
  let end = 0;
  for (let i = 0; i < layer.chunkCount; i++) {
    const rec = layer.chunk(i);
    expect(rec.storedOffset).toBe(end);
    const content = await decodeChunk(rec.compressed ? codecFromId(layer.codec)! : "none", body.subarray(rec.storedOffset, rec.storedOffset + rec.storedSize), rec.size);
    expect(createHash("sha256").update(content).digest("hex")).toBe(toHex(rec.digest));
    end += rec.storedSize;
  }
  expect(end).toBe(body.length);
}

/** The OCI error of a response: status and first error's code and message. */
function ociError(r: Got): { status: number; code: string; message: string } {
  expect(r.headers.get("content-type")).toMatch(/^application\/json/);
  const parsed = JSON.parse(r.body.toString("utf8")) as { errors: { code: string; message: string }[] };
  expect(parsed.errors.length).toBeGreaterThan(0);
  return { status: r.status, code: parsed.errors[0]!.code, message: parsed.errors[0]!.message };
}

/** One counter with exactly these labels (0 when absent). */
async function metric(s: Skiff, name: string, labels: Record<string, string> = {}): Promise<number> {
  const want = JSON.stringify(Object.entries(labels).sort());
  const sample = parseMetrics(await s.metricsText()).find((m) => m.name === name && JSON.stringify(Object.entries(m.labels).sort()) === want);
  return sample?.value ?? 0;
}

async function counters(s: Skiff): Promise<Record<"started" | "finished" | "failed" | "seconds" | "verifyFailed", number>> {
  const m = await s.metrics();
  return {
    started: m.get("skiff_conversions_started_total") ?? 0,
    finished: m.get("skiff_conversions_finished_total") ?? 0,
    failed: m.get("skiff_conversions_failed_total") ?? 0,
    seconds: m.get("skiff_conversion_seconds_total") ?? 0,
    verifyFailed: m.get("skiff_verification_failures_total") ?? 0,
  };
}

const hexOf = (digest: string) => digest.slice("sha256:".length);

/** Converted keys (layer conversions, image bootstraps) in skiff's store for these digests. */
function convertedPaths(s: Skiff, layers: string[], manifest: string): string[] {
  const at = (kind: string, digest: string) => join(s.dataDir, "converted", kind, "sha256", hexOf(digest).slice(0, 2), hexOf(digest));
  return [...layers.map((l) => at("layers", l)), at("images", manifest)].flatMap((p) => (existsSync(p) ? [p, ...listAllPaths(p)] : []));
}

/** Files left in the store's temporary directory (a cancelled upload must leave none). */
const leftovers = (s: Skiff) => listAllPaths(join(s.dataDir, ".tmp"));

/** GETs of these blobs that reached the registry since access-log line `from`. */
function blobGets(from: number, digests: string[]): Map<string, number> {
  const counts = new Map(digests.map((d) => [d, 0]));
  for (const line of registry.accessLog().slice(from)) {
    if (line.method !== "GET") continue;
    const m = /\/blobs\/(sha256:[0-9a-f]{64})$/.exec(line.path);
    if (m && counts.has(m[1]!)) counts.set(m[1]!, counts.get(m[1]!)! + 1);
  }
  return counts;
}

/** Pushes an image by hand through the distribution API (any media types, any bytes). */
async function pushRaw(repo: string, tag: string, layers: { bytes: Uint8Array; mediaType: string }[]): Promise<{ manifest: string; layers: string[] }> {
  const pushBlob = async (bytes: Uint8Array) => {
    const digest = sha256(bytes);
    const start = await fetch(`${registry.url}/v2/${repo}/blobs/uploads/`, { method: "POST" });
    await start.arrayBuffer();
    expect(start.status).toBe(202);
    const location = new URL(start.headers.get("location")!, registry.url);
    location.searchParams.set("digest", digest);
    const put = await fetch(location, { method: "PUT", body: new Uint8Array(bytes), headers: { "Content-Type": "application/octet-stream" } });
    await put.arrayBuffer();
    expect(put.status).toBe(201);
    return { digest, size: bytes.byteLength };
  };
  const config = Buffer.from(JSON.stringify({ architecture: "amd64", os: "linux", rootfs: { type: "layers", diff_ids: layers.map((l) => sha256(l.bytes)) } }));
  const configDesc = await pushBlob(config);
  const layerDescs = [];
  for (const l of layers) layerDescs.push({ mediaType: l.mediaType, ...(await pushBlob(l.bytes)) });
  const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MT.manifest, config: { mediaType: MT.config, ...configDesc }, layers: layerDescs }));
  const put = await fetch(`${registry.url}/v2/${repo}/manifests/${tag}`, { method: "PUT", body: manifest, headers: { "Content-Type": MT.manifest } });
  const text = await put.text();
  expect(put.status, text).toBe(201);
  return { manifest: sha256(manifest), layers: layerDescs.map((d) => d.digest) };
}

function inspect(...args: string[]): { code: number | null; stdout: string; stderr: string } {
  return cli("inspect", ...args);
}

async function withSkiff<T>(extraArgs: string[], body: (s: Skiff) => Promise<T>): Promise<T> {
  const s = await Skiff.start({ upstream: registry.url, extraArgs });
  try {
    return await body(s);
  } finally {
    await s.stop();
  }
}

// ---- setup --------------------------------------------------------------------------------------

beforeAll(async () => {
  registry = await Registry.start({ name: "lazy-registry" });
  layout = new OciLayout(tempDir("lazy-layout"));
  const written = writeImage(layout, "v1", APP_LAYERS);
  app = { manifest: written.manifest.digest, layers: written.layers.map((l) => l.digest) };
  await pushImage(layout, "v1", `${registry.hostPort}/e2e/app:v1`);
  for (const c of CONVERSIONS) {
    const out = tempDir("lazy-convert");
    const r = cli("convert", `${layout.dir}:v1`, "--out", out, ...c.args);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    const image = JSON.parse(readFileSync(join(out, "image.json"), "utf8")) as { bootstrap: string; params: string };
    expect(image.params).toBe(c.params);
    local.set(c.query, { dir: out, bootstrap: readFileSync(join(out, image.bootstrap)) });
  }
  proxy = await Skiff.start({ upstream: registry.url });
}, 120_000);

afterAll(async () => {
  await proxy?.stop();
  await registry?.stop();
  await teardown();
});

// ---- tests --------------------------------------------------------------------------------------

describe("bootstraps", () => {
  test("50 concurrent first requests: one conversion per layer, one upstream GET per layer, identical answers", async () => {
    await withSkiff([], async (fresh) => {
      const logFrom = await registry.settledRequestCount();
      const url = bootstrapUrl(fresh, "e2e/app", "v1", "?chunk-size=64k");
      const answers = await Promise.all(Array.from({ length: 50 }, () => get(url)));
      expect(answers.map((a) => a.status)).toEqual(Array(50).fill(200));
      const want = local.get("?chunk-size=64k")!.bootstrap;
      for (const a of answers) expect(a.body.equals(want)).toBe(true);
      const c = await counters(fresh);
      expect(c).toMatchObject({ started: app.layers.length, finished: app.layers.length, failed: 0 });
      expect(c.seconds).toBeGreaterThan(0);
      await registry.settledRequestCount();
      expect([...blobGets(logFrom, app.layers).values()]).toEqual(app.layers.map(() => 1));
    });
  }, 60_000);

  test("500 concurrent clients on an uncached image: one upstream GET and one conversion per layer, every answer right", async () => {
    // Bootstraps (which convert) and plain blob pulls of the same layers, all at once on a fresh proxy.
    await withSkiff([], async (fresh) => {
      const logFrom = await registry.settledRequestCount();
      const url = bootstrapUrl(fresh, "e2e/app", "v1", "?chunk-size=64k");
      const layer = app.layers[0]!;
      const asked = Array.from({ length: 500 }, (_, i) => (i % 2 === 0 ? get(url) : get(`${fresh.url}/v2/e2e/app/blobs/${layer}`)));
      const answers = await Promise.all(asked);
      expect(answers.map((a) => a.status)).toEqual(Array(500).fill(200));
      const want = local.get("?chunk-size=64k")!.bootstrap;
      answers.forEach((a, i) => expect(i % 2 === 0 ? a.body.equals(want) : sha256(a.body) === layer, `answer ${i}`).toBe(true));
      expect(await counters(fresh)).toMatchObject({ started: app.layers.length, finished: app.layers.length, failed: 0 });
      await registry.settledRequestCount();
      expect([...blobGets(logFrom, app.layers).values()]).toEqual(app.layers.map(() => 1));
    });
  }, 120_000);

  test("a bootstrap through the proxy is byte-identical to `skiff convert` of the same layout (64k, default, deflate-raw)", async () => {
    for (const c of CONVERSIONS) {
      const want = local.get(c.query)!.bootstrap;
      const byTag = await bootstrapWithParams(c.params, () => get(bootstrapUrl(proxy, "e2e/app", "v1", c.query), { "accept-encoding": "identity" }));
      expect(byTag.status, byTag.body.toString()).toBe(200);
      expect(byTag.body.equals(want), `bootstrap ${c.query || "(default)"}`).toBe(true);
      const digest = sha256(byTag.body);
      expect(byTag.headers.get("docker-content-digest")).toBe(digest);
      expect(byTag.headers.get("etag")).toBe(`"${digest}"`);
      expect(byTag.headers.get("content-type")).toBe(BOOTSTRAP_TYPE);
      expect(byTag.headers.get("content-length")).toBe(String(want.length));
      expect(byTag.headers.get("skiff-manifest-digest")).toBe(app.manifest);
      expect(byTag.headers.get("skiff-platform")).toBe("linux/amd64");
      expect(byTag.headers.get("skiff-params")).toBe(c.params);
      expect(byTag.headers.get("cache-control")).toBe("no-cache");
      // Gzipped for a client that takes it (fetch inflates it): the same bytes and digest, another ETag.
      const zipped = await get(bootstrapUrl(proxy, "e2e/app", "v1", c.query), { "accept-encoding": "gzip" });
      expect(zipped.headers.get("content-encoding")).toBe("gzip");
      expect(zipped.body.equals(want)).toBe(true);
      expect(zipped.headers.get("docker-content-digest")).toBe(digest);
      expect(zipped.headers.get("etag")).toBe(`"${digest}+gzip"`);

      const byDigest = await get(bootstrapUrl(proxy, "e2e/app", app.manifest, c.query));
      expect(byDigest.status).toBe(200);
      expect(byDigest.body.equals(want)).toBe(true);
      expect(byDigest.headers.get("cache-control")).toBe(IMMUTABLE);
      expect(byDigest.headers.get("docker-content-digest")).toBe(digest);

      const notModified = await get(bootstrapUrl(proxy, "e2e/app", app.manifest, c.query), { "If-None-Match": `"${digest}"` });
      expect(notModified.status).toBe(304);
      const part = await get(bootstrapUrl(proxy, "e2e/app", "v1", c.query), { Range: "bytes=0-99" });
      expect(part.status).toBe(206);
      expect(part.body.equals(want.subarray(0, 100))).toBe(true);
    }
  }, 60_000);

  test("two images sharing a base layer: the shared layer is converted once", async () => {
    const base = gzLayer([dir("lib"), file("lib/libshared.so", prng.bytes(3 * K64)), file("lib/README", "shared base\n")]);
    const topA = gzLayer([dir("app"), file("app/a", prng.bytes(K64 + 5))]);
    const topB = gzLayer([dir("app"), file("app/b", prng.bytes(K64 + 9))]);
    const shared = new OciLayout(tempDir("lazy-shared"));
    const a = writeImage(shared, "a", [base, topA]);
    const b = writeImage(shared, "b", [base, topB]);
    expect(a.layers[0]!.digest).toBe(b.layers[0]!.digest);
    await pushImage(shared, "a", `${registry.hostPort}/e2e/shared-a:v1`);
    await pushImage(shared, "b", `${registry.hostPort}/e2e/shared-b:v1`);
    const distinct = new Set([...a.layers, ...b.layers].map((l) => l.digest));
    expect(distinct.size).toBe(3);

    const before = await counters(proxy);
    const ra = await get(bootstrapUrl(proxy, "e2e/shared-a", "v1"));
    const rb = await get(bootstrapUrl(proxy, "e2e/shared-b", "v1"));
    expect([ra.status, rb.status]).toEqual([200, 200]);
    const after = await counters(proxy);
    expect(after.started - before.started).toBe(distinct.size);
    expect(after.finished - before.finished).toBe(distinct.size);
    const [ba, bb] = [Bootstrap.decode(ra.body), Bootstrap.decode(rb.body)];
    expect(ba.blob(0).layerDigest).toBe(bb.blob(0).layerDigest);
    expect(toHex(ba.blob(0).dataDigest)).toBe(toHex(bb.blob(0).dataDigest));
    expect([ba.lookup("/app/a") !== null, ba.lookup("/app/b") !== null, bb.lookup("/app/b") !== null]).toEqual([true, false, true]);

    // The shared layer's converted data is reachable from both repositories, each entitled to it.
    const params = ra.headers.get("skiff-params")!;
    for (const repo of ["e2e/shared-a", "e2e/shared-b"]) {
      const data = await get(`${layerUrl(proxy, repo, a.layers[0]!.digest, params)}/data`, { Range: "bytes=0-0" });
      expect(data.status, repo).toBe(206);
    }
  }, 60_000);

  test("request errors: unknown tag, bad chunk size or codec, a platform the image lacks", async () => {
    const missing = ociError(await get(bootstrapUrl(proxy, "e2e/app", "nope")));
    expect(missing).toMatchObject({ status: 404, code: "MANIFEST_UNKNOWN" });
    expect(ociError(await get(bootstrapUrl(proxy, "e2e/app", "v1", "?chunk-size=3k")))).toMatchObject({ status: 400, code: "UNSUPPORTED" });
    expect(ociError(await get(bootstrapUrl(proxy, "e2e/app", "v1", "?codec=zip")))).toMatchObject({ status: 400, code: "UNSUPPORTED" });
    expect(ociError(await get(bootstrapUrl(proxy, "e2e/app", "sha256:1234")))).toMatchObject({ status: 400, code: "DIGEST_INVALID" });
    expect(ociError(await get(bootstrapUrl(proxy, "e2e/app", "v1", "?platform=linux")))).toMatchObject({ status: 400, code: "UNSUPPORTED" });
  });
});

describe("chunks and data blobs", () => {
  for (const c of CONVERSIONS.filter((x) => x.query !== "")) {
    test(`every chunk URL serves its record's bytes; data ranges match (${c.params})`, async () => {
      const dataBefore = await metric(proxy, "skiff_chunk_bytes_served_total", { route: "data" });
      const chunksBefore = await metric(proxy, "skiff_chunk_bytes_served_total", { route: "chunks" });
      const r = await get(bootstrapUrl(proxy, "e2e/app", "v1", c.query));
      expect(r.status).toBe(200);
      const b = Bootstrap.decode(r.body);
      const params = r.headers.get("skiff-params")!;
      expect(params).toBe(c.params);
      const codec = c.params.endsWith("deflate-raw") ? "deflate-raw" : "none";

      // Every chunk record, by its content-addressed URL.
      const stored: Buffer[] = [];
      const forms = new Set<string>();
      let servedChunkBytes = 0;
      for (let i = 0; i < b.chunkCount; i++) {
        const rec = b.chunk(i);
        const form = rec.compressed ? codec : "none";
        forms.add(form);
        const hex = toHex(rec.digest);
        const url = `${layerUrl(proxy, "e2e/app", b.blob(rec.blob).layerDigest, params)}/chunks/${hex}.${form}`;
        const got = await get(url);
        expect(got.status, url).toBe(200);
        expect(got.body.length).toBe(rec.storedSize);
        expect(got.headers.get("etag")).toBe(`"${hex}.${form}"`);
        expect(got.headers.get("cache-control")).toBe(IMMUTABLE);
        expect(got.headers.get("accept-ranges")).toBe("bytes");
        expect(got.headers.get("content-type")).toBe("application/octet-stream");
        const data = await decodeChunk(form === "none" ? "none" : "deflate-raw", got.body, rec.size);
        expect(createHash("sha256").update(data).digest("hex")).toBe(hex);
        stored.push(got.body);
        servedChunkBytes += got.body.length;
      }
      expect(forms).toEqual(codec === "none" ? new Set(["none"]) : new Set(["none", "deflate-raw"]));

      // A file rebuilt from its chunks in order is the file; duplicates share chunk records.
      const fileBytes = async (path: string) => {
        const ino = b.lookup(path);
        expect(ino, path).not.toBeNull();
        const parts = [];
        for (const rec of b.chunks(ino!)) {
          const got = await get(`${layerUrl(proxy, "e2e/app", b.blob(rec.blob).layerDigest, params)}/chunks/${toHex(rec.digest)}.${rec.compressed ? codec : "none"}`);
          parts.push(await decodeChunk(rec.compressed ? codec : "none", got.body, rec.size));
        }
        return Buffer.concat(parts);
      };
      expect((await fileBytes("/bin/multi")).equals(MULTI)).toBe(true);
      expect(b.chunks(b.lookup("/bin/multi")!).length).toBe(4);
      expect((await fileBytes("/usr/share/README")).equals(TEXT)).toBe(true);
      expect((await fileBytes("/data/dup-c")).equals(DUP)).toBe(true);
      expect(b.lookup("/data/gone")).toBeNull();
      const ids = (p: string) => b.chunks(b.lookup(p)!).map((x) => `${x.blob}:${x.storedOffset}`);
      expect(ids("/data/dup-b")).toEqual(ids("/data/dup-a"));

      // The data blob: whole (the chunks its layer bootstrap's chunk table names, which the data
      // digest is the sha256 of), and by range for a few chunks.
      for (let blob = 0; blob < b.blobCount; blob++) {
        const info = b.blob(blob);
        const whole = await get(`${layerUrl(proxy, "e2e/app", info.layerDigest, params)}/data`);
        expect(whole.status).toBe(200);
        expect(whole.body.length).toBe(info.storedSize);
        const layerBootstrap = Bootstrap.decode((await get(`${layerUrl(proxy, "e2e/app", info.layerDigest, params)}/bootstrap`)).body);
        await expectDataBlob(layerBootstrap, whole.body, info.dataDigest);
        expect(whole.headers.get("etag")).toBe(`"data:${toHex(info.dataDigest)}"`);
        expect(whole.headers.get("cache-control")).toBe(IMMUTABLE);
        expect(whole.headers.get("accept-ranges")).toBe("bytes");
      }
      const sample = [0, Math.floor(b.chunkCount / 2), b.chunkCount - 1];
      for (const i of sample) {
        const rec = b.chunk(i);
        const url = `${layerUrl(proxy, "e2e/app", b.blob(rec.blob).layerDigest, params)}/data`;
        const got = await get(url, { Range: `bytes=${rec.storedOffset}-${rec.storedOffset + rec.storedSize - 1}` });
        expect(got.status).toBe(206);
        expect(got.headers.get("content-range")).toBe(`bytes ${rec.storedOffset}-${rec.storedOffset + rec.storedSize - 1}/${b.blob(rec.blob).storedSize}`);
        expect(got.body.equals(stored[i]!)).toBe(true);
      }
      // Two chunks of one blob in one request (multipart/byteranges).
      const inBlob0 = Array.from({ length: b.chunkCount }, (_, i) => i).filter((i) => b.chunk(i).blob === 0);
      const [x, y] = [inBlob0[0]!, inBlob0[inBlob0.length - 1]!];
      const [rx, ry] = [b.chunk(x), b.chunk(y)];
      if (x !== y && rx.storedOffset + rx.storedSize < ry.storedOffset) {
        const multi = await get(`${layerUrl(proxy, "e2e/app", b.blob(0).layerDigest, params)}/data`, {
          Range: `bytes=${rx.storedOffset}-${rx.storedOffset + rx.storedSize - 1},${ry.storedOffset}-${ry.storedOffset + ry.storedSize - 1}`,
        });
        expect(multi.status).toBe(206);
        const parts = parseByteranges(multi.body, multi.headers.get("content-type"));
        expect(parts.map((p) => p.body.equals(p.start === rx.storedOffset ? stored[x]! : stored[y]!))).toEqual([true, true]);
      }
      // A range of a chunk URL, and a revalidation.
      const first = b.chunk(0);
      const chunkUrl = `${layerUrl(proxy, "e2e/app", b.blob(first.blob).layerDigest, params)}/chunks/${toHex(first.digest)}.${first.compressed ? codec : "none"}`;
      const head = await get(chunkUrl, { Range: "bytes=0-9" });
      expect(head.status).toBe(206);
      expect(head.body.equals(stored[0]!.subarray(0, 10))).toBe(true);
      expect((await get(chunkUrl, { "If-None-Match": `"${toHex(first.digest)}.${first.compressed ? codec : "none"}"` })).status).toBe(304);

      expect(await metric(proxy, "skiff_chunk_bytes_served_total", { route: "chunks" })).toBeGreaterThanOrEqual(chunksBefore + servedChunkBytes);
      expect(await metric(proxy, "skiff_chunk_bytes_served_total", { route: "data" })).toBeGreaterThan(dataBefore);
    }, 60_000);
  }

  test("unknown chunks and wrong forms: 404; parameters not converted yet are converted on demand", async () => {
    const r = await get(bootstrapUrl(proxy, "e2e/app", "v1", "?chunk-size=64k"));
    const b = Bootstrap.decode(r.body);
    const layer = b.blob(0).layerDigest;
    const hex = toHex(b.chunk(0).digest);
    const base = layerUrl(proxy, "e2e/app", layer, "v1-c16-none");
    expect(ociError(await get(`${base}/chunks/${hex}.deflate-raw`))).toMatchObject({ status: 404, code: "BLOB_UNKNOWN" });
    expect(ociError(await get(`${base}/chunks/${"0".repeat(64)}.none`))).toMatchObject({ status: 404, code: "BLOB_UNKNOWN" });
    expect(ociError(await get(`${base}/chunks/${hex}.zip`))).toMatchObject({ status: 400, code: "DIGEST_INVALID" });
    // Parameters this layer was not converted with yet: a node may hold a bootstrap whose layer
    // conversion was evicted since, so the layer is converted (again) rather than refused.
    const other = await get(`${layerUrl(proxy, "e2e/app", layer, "v1-c17-none")}/bootstrap`);
    expect(other.status).toBe(200);
    const otherData = Bootstrap.decode(other.body).blob(0);
    const data = await get(`${layerUrl(proxy, "e2e/app", layer, "v1-c17-none")}/data`);
    expect(data.status).toBe(200);
    expect(data.body.byteLength).toBe(otherData.storedSize);
    await expectDataBlob(Bootstrap.decode(other.body), data.body, otherData.dataDigest);
    // Parameters that name nothing.
    expect(ociError(await get(`${layerUrl(proxy, "e2e/app", layer, "v9-c16-none")}/data`))).toMatchObject({ status: 404, code: "NAME_UNKNOWN" });
    expect(ociError(await get(`${layerUrl(proxy, "e2e/app", "sha256:abc", "v1-c16-none")}/data`))).toMatchObject({ status: 400, code: "DIGEST_INVALID" });
  });

  test("repository scoping: another repository's converted layers are 404 BLOB_UNKNOWN", async () => {
    const r = await get(bootstrapUrl(proxy, "e2e/app", "v1", "?chunk-size=64k"));
    const b = Bootstrap.decode(r.body);
    const rec = b.chunk(0);
    const layer = b.blob(rec.blob).layerDigest;
    const chunk = `chunks/${toHex(rec.digest)}.none`;
    expect((await get(`${layerUrl(proxy, "e2e/app", layer, "v1-c16-none")}/${chunk}`)).status).toBe(200);
    // The layer's own bootstrap: the conversion the image bootstrap names (same data blob).
    const own = await get(`${layerUrl(proxy, "e2e/app", layer, "v1-c16-none")}/bootstrap`);
    expect(own.status).toBe(200);
    expect(own.headers.get("docker-content-digest")).toBe(`sha256:${createHash("sha256").update(own.body).digest("hex")}`);
    const layerBootstrap = Bootstrap.decode(own.body);
    expect(layerBootstrap.kind).toBe("layer");
    expect(layerBootstrap.blob(0).layerDigest).toBe(layer);
    expect(toHex(layerBootstrap.blob(0).dataDigest)).toBe(toHex(b.blob(rec.blob).dataDigest));
    const logFrom = await registry.settledRequestCount();
    // A repository the registry does not have, and one it has without this layer.
    for (const repo of ["e2e/elsewhere", "e2e/shared-a"]) {
      for (const path of ["data", chunk, "bootstrap"]) {
        const got = await get(`${layerUrl(proxy, repo, layer, "v1-c16-none")}/${path}`);
        expect(ociError(got), `${repo} ${path}`).toMatchObject({ status: 404, code: "BLOB_UNKNOWN" });
      }
    }
    // skiff asked the registry (HEAD under the other name) and fetched nothing.
    const asked = registry.accessLog().slice(logFrom);
    expect(asked.filter((l) => l.method === "GET" && l.path.includes("/blobs/"))).toEqual([]);
    expect(asked.filter((l) => l.method === "HEAD" && l.path.includes(layer)).length).toBeGreaterThan(0);
  });
});

describe("conversions that fail publish nothing", () => {
  test("a corrupted upstream layer: 502, counted, nothing published; restored, the next request succeeds", async () => {
    const layer = gzLayer([dir("c"), file("c/data", prng.bytes(200_000)), file("c/text", "corrupt me\n")]);
    const pushed = await pushRaw("e2e/corrupt", "v1", [layer]);
    const path = registry.blobDataPath(pushed.layers[0]!);
    const original = readFileSync(path);
    const bad = Buffer.from(original);
    for (let i = 1000; i < 1064; i++) bad[i] = bad[i]! ^ 0xff;
    writeFileSync(path, bad);
    try {
      const before = await counters(proxy);
      const r = await get(bootstrapUrl(proxy, "e2e/corrupt", "v1"));
      const err = ociError(r);
      expect(err.status).toBe(502);
      expect(err.code).toBe("UNAVAILABLE");
      expect(err.message).toContain(pushed.layers[0]);
      const after = await counters(proxy);
      expect(after.verifyFailed - before.verifyFailed).toBe(1);
      expect(after.failed - before.failed).toBe(1);
      expect(after.finished - before.finished).toBe(0);
      expect(convertedPaths(proxy, pushed.layers, pushed.manifest)).toEqual([]);
      expect(existsSync(join(proxy.dataDir, "blobs", "sha256", hexOf(pushed.layers[0]!).slice(0, 2), hexOf(pushed.layers[0]!)))).toBe(false);
      expect(leftovers(proxy)).toEqual([]);
      // The data route converts on demand, and meets the same corrupt layer.
      const data = await get(`${layerUrl(proxy, "e2e/corrupt", pushed.layers[0]!, "v1-c20-none")}/data`);
      expect(ociError(data)).toMatchObject({ status: 502, code: "UNAVAILABLE" });
      expect(convertedPaths(proxy, pushed.layers, pushed.manifest)).toEqual([]);
    } finally {
      writeFileSync(path, original);
    }
    const again = await get(bootstrapUrl(proxy, "e2e/corrupt", "v1"));
    expect(again.status, again.body.toString()).toBe(200);
    expect(Bootstrap.decode(again.body).lookup("/c/text")).not.toBeNull();
    expect(convertedPaths(proxy, pushed.layers, pushed.manifest).length).toBeGreaterThan(0);
  }, 60_000);

  test("an upstream layer swapped for another valid layer of the same length (the mismatch shows only at its end): 502, nothing published, no blob", async () => {
    // gzip level 0: the twin has the same length, so nothing but the digest at the end gives it away.
    const stored = (seed: string) => gzipSync(tarArchive([dir("s"), file("s/data", new Prng(seed).bytes(700_000)), file("s/text", "swap me\n")]), { level: 0 });
    const layer = { bytes: stored("swap-original"), mediaType: MT.layerGzip };
    const twin = stored("swap-twin");
    expect(twin.length).toBe(layer.bytes.length);
    const pushed = await pushRaw("e2e/swapped", "v1", [layer]);
    const path = registry.blobDataPath(pushed.layers[0]!);
    writeFileSync(path, twin);
    try {
      const before = await counters(proxy);
      const r = await get(bootstrapUrl(proxy, "e2e/swapped", "v1"));
      expect(ociError(r)).toMatchObject({ status: 502, code: "UNAVAILABLE", message: expect.stringContaining(pushed.layers[0]!) });
      const after = await counters(proxy);
      expect(after.verifyFailed - before.verifyFailed).toBe(1);
      expect(after.failed - before.failed).toBe(1);
      expect(convertedPaths(proxy, pushed.layers, pushed.manifest)).toEqual([]);
      expect(existsSync(join(proxy.dataDir, "blobs", "sha256", hexOf(pushed.layers[0]!).slice(0, 2), hexOf(pushed.layers[0]!)))).toBe(false);
      expect(leftovers(proxy)).toEqual([]);
    } finally {
      writeFileSync(path, layer.bytes);
    }
    const again = await get(bootstrapUrl(proxy, "e2e/swapped", "v1"));
    expect(again.status, again.body.toString()).toBe(200);
    expect(Bootstrap.decode(again.body).lookup("/s/text")).not.toBeNull();
  }, 60_000);

  test("a truncated gzip layer (valid digest): 422 MANIFEST_INVALID, nothing published, the same again (no stuck lock)", async () => {
    const whole = gzLayer([dir("t"), file("t/data", prng.bytes(300_000))]);
    const truncated = whole.bytes.subarray(0, Math.floor(whole.bytes.length * 0.6));
    const pushed = await pushRaw("e2e/truncated", "v1", [{ bytes: truncated, mediaType: MT.layerGzip }]);
    for (let attempt = 0; attempt < 2; attempt++) {
      const before = await counters(proxy);
      const err = ociError(await get(bootstrapUrl(proxy, "e2e/truncated", "v1")));
      expect(err, `attempt ${attempt}`).toMatchObject({ status: 422, code: "MANIFEST_INVALID" });
      expect(err.message).toMatch(/^cannot convert this image: /);
      const after = await counters(proxy);
      expect(after.failed - before.failed).toBe(1);
      expect(after.finished - before.finished).toBe(0);
      expect(convertedPaths(proxy, pushed.layers, pushed.manifest)).toEqual([]);
      expect(leftovers(proxy)).toEqual([]);
    }
  }, 60_000);

  test("an unsupported layer media type: 422, nothing published", async () => {
    const layer = gzLayer([dir("u"), file("u/x", "x\n")]);
    const pushed = await pushRaw("e2e/unknown-type", "v1", [{ bytes: layer.bytes, mediaType: "application/vnd.example.unknown" }]);
    const logFrom = await registry.settledRequestCount();
    const err = ociError(await get(bootstrapUrl(proxy, "e2e/unknown-type", "v1")));
    // Refused from the manifest alone: the layer is never downloaded.
    await registry.settledRequestCount();
    expect([...blobGets(logFrom, pushed.layers).values()]).toEqual([0]);
    expect(err).toMatchObject({ status: 422, code: "MANIFEST_INVALID" });
    expect(err.message).toContain("application/vnd.example.unknown");
    expect(convertedPaths(proxy, pushed.layers, pushed.manifest)).toEqual([]);
    expect(leftovers(proxy)).toEqual([]);
  });
});

describe("limits", () => {
  test("--max-layer-size 1k: 422 SIZE_INVALID before any layer is fetched", async () => {
    await withSkiff(["--max-layer-size", "1k"], async (s) => {
      const logFrom = await registry.settledRequestCount();
      const err = ociError(await get(bootstrapUrl(s, "e2e/app", "v1")));
      expect(err).toMatchObject({ status: 422, code: "SIZE_INVALID" });
      expect(err.message).toContain("1024");
      await registry.settledRequestCount();
      expect([...blobGets(logFrom, app.layers).values()]).toEqual(app.layers.map(() => 0));
      expect(await counters(s)).toMatchObject({ started: 0, failed: 0, finished: 0 });
      expect(convertedPaths(s, app.layers, app.manifest)).toEqual([]);
    });
  });

  test("--max-layer-entries 5: a layer with more files is 422 MANIFEST_INVALID, and nothing is published", async () => {
    await withSkiff(["--max-layer-entries", "5"], async (s) => {
      const err = ociError(await get(bootstrapUrl(s, "e2e/app", "v1")));
      expect(err).toMatchObject({ status: 422, code: "MANIFEST_INVALID" });
      expect(err.message).toMatch(/has more than 5 entries/);
      expect(convertedPaths(s, app.layers, app.manifest)).toEqual([]);
      expect(leftovers(s)).toEqual([]);
    });
  });

  test("--convert-wait 0: 202 + Retry-After while converting, then 200", async () => {
    const big = gzipSync(tarArchive([dir("big"), file("big/random.bin", prng.bytes(60 * 1024 * 1024))]), { level: 1 });
    const pushed = await pushRaw("e2e/big", "v1", [{ bytes: big, mediaType: MT.layerGzip }]);
    await withSkiff(["--convert-wait", "0"], async (s) => {
      const first = await get(bootstrapUrl(s, "e2e/big", "v1"));
      expect(first.status).toBe(202);
      expect(first.headers.get("retry-after")).toMatch(/^\d+$/);
      expect(first.headers.get("cache-control")).toBe("no-store");
      expect(JSON.parse(first.body.toString())).toMatchObject({ status: "converting" });
      let last = first;
      for (let i = 0; i < 240 && last.status === 202; i++) {
        await new Promise((r) => setTimeout(r, 500));
        last = await get(bootstrapUrl(s, "e2e/big", "v1"));
      }
      expect(last.status, last.body.toString().slice(0, 500)).toBe(200);
      const b = Bootstrap.decode(last.body);
      expect(b.blob(0).layerDigest).toBe(pushed.layers[0]);
      expect(b.inode(b.lookup("/big/random.bin")!).size).toBe(60 * 1024 * 1024);
      expect(await counters(s)).toMatchObject({ started: 1, finished: 1, failed: 0 });
      // Served at once from now on: the stored bootstrap needs no conversion to wait for.
      expect((await get(bootstrapUrl(s, "e2e/big", pushed.manifest))).status).toBe(200);
    });
  }, 120_000);

  test("--convert-step: every request converts one step and answers 202, and the end result is `skiff convert`'s", async () => {
    await withSkiff(["--convert-step", "128k"], async (s) => {
      for (const c of CONVERSIONS) {
        let waits = 0;
        let last = await get(bootstrapUrl(s, "e2e/app", "v1", c.query));
        // deflate-raw: the none conversion's steps first, then its bootstrap (no-store) while deflate-raw's go on.
        for (let i = 0; i < 1000 && (last.status === 202 || last.headers.get("skiff-params") !== c.params); i++) {
          waits++;
          if (last.status === 202) {
            expect(last.headers.get("retry-after")).toBe("5");
          } else {
            expect([last.status, last.headers.get("cache-control")]).toEqual([200, "no-store"]);
            await new Promise((resolve) => setTimeout(resolve, 20));
          }
          last = await get(bootstrapUrl(s, "e2e/app", "v1", c.query));
        }
        expect(last.status, last.body.toString().slice(0, 500)).toBe(200);
        expect(last.body.equals(local.get(c.query)!.bootstrap)).toBe(true);
        // The image holds well over 128 KiB of content per layer in 64 KiB or 1 MiB chunks, and
        // each request converts one step.
        expect(waits).toBeGreaterThanOrEqual(3);
      }
      const m = await s.metrics();
      const paused = m.get("skiff_conversion_steps_total") ?? 0;
      expect(paused).toBeGreaterThanOrEqual(9);
      expect(m.get("skiff_conversions_started_total")).toBe((m.get("skiff_conversions_finished_total") ?? 0) + paused);
      // Checkpoints and segments are gone once the layers are published (the filesystem store
      // leaves empty directories behind, as for every deleted key).
      expect(convertedPaths(s, app.layers, app.manifest).filter((p) => p.includes("/steps/") && statSync(p).isFile())).toEqual([]);
      expect(leftovers(s)).toEqual([]);
    });
  }, 300_000);
});

describe("skiff inspect of a proxy URL", () => {
  test("prints exactly what inspect of the local conversion prints (text, --json, --path, by tag and digest)", () => {
    const ref = `${proxy.url}/e2e/app:v1`;
    for (const [query, flags] of [
      ["?chunk-size=64k", ["--chunk-size", "64k"]],
      ["", []],
      ["?chunk-size=64k&codec=deflate-raw", ["--chunk-size", "64k", "--codec", "deflate-raw"]],
    ] as const) {
      const dirOut = local.get(query)!.dir;
      for (const extra of [[], ["--json"], ["--path", "/data"]]) {
        const want = inspect(dirOut, ...extra);
        expect(want.code).toBe(0);
        const got = inspect(ref, ...flags, ...extra);
        expect(got.stderr).toBe("");
        expect(got.code).toBe(0);
        expect(got.stdout).toBe(want.stdout);
      }
    }
    const byDigest = inspect(`${proxy.url}/e2e/app@${app.manifest}`, "--json", "--chunk-size", "64k");
    expect(byDigest.code).toBe(0);
    const localJson = JSON.parse(inspect(local.get("?chunk-size=64k")!.dir, "--json").stdout) as InspectJson;
    const proxyJson = JSON.parse(byDigest.stdout) as InspectJson;
    expect(proxyJson.entries).toEqual(localJson.entries);
    expect(proxyJson.entries.map((e) => e.path)).toContain("/bin/multi");
    expect(proxyJson.blobs.map((b) => b.layerDigest)).toEqual(app.layers);
  });

  test("errors: the proxy's OCI error on one line, exit 1", () => {
    const missing = inspect(`${proxy.url}/e2e/app:nope`);
    expect(missing.code).toBe(1);
    expect(missing.stdout).toBe("");
    expect(missing.stderr).toMatch(/^skiff inspect: MANIFEST_UNKNOWN: .+\n$/);
    const unconvertible = inspect(`${proxy.url}/e2e/unknown-type:v1`);
    expect(unconvertible.code).toBe(1);
    expect(unconvertible.stderr).toMatch(/^skiff inspect: MANIFEST_INVALID: cannot convert this image: .+\n$/);
    const platform = inspect(`${proxy.url}/e2e/app:v1`, "--platform", "linux/arm64");
    expect(platform.code).toBe(0); // a lone manifest is its config's platform, whatever is asked
    const badUrl = inspect(`${proxy.url}/E2E/app:v1`);
    expect(badUrl.code).toBe(1);
    expect(badUrl.stderr).toMatch(/^skiff inspect: invalid proxy image URL .*\n$/);
    const usage = inspect(`${proxy.url}/e2e/app:v1`, "--chunk-size", "3k");
    expect(usage.code).toBe(2);
    const localOnly = inspect(local.get("")!.dir, "--codec", "none");
    expect(localOnly.code).toBe(2);
  });

  test("waits through 202 + Retry-After (--convert-wait 0) and shows the result", async () => {
    await withSkiff(["--convert-wait", "0"], async (s) => {
      const started = Date.now();
      const got = inspect(`${s.url}/e2e/app:v1`, "--json", "--chunk-size", "64k", "--timeout", "60");
      expect(got.stderr).toBe("");
      expect(got.code).toBe(0);
      expect(Date.now() - started).toBeGreaterThanOrEqual(1000); // at least one Retry-After wait
      expect(got.stdout).toBe(inspect(local.get("?chunk-size=64k")!.dir, "--json").stdout);
    });
  }, 60_000);
});

test("nothing above ended in an internal error", () => {
  expect(proxy.log()).not.toMatch(/internal error/);
});
