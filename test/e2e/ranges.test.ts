// HTTP Range on blobs through skiff, byte for byte against the OCI layout: single, open-ended,
// suffix, clamped, unsatisfiable, If-Range, multi-range, HEAD — for a cached blob and for blobs skiff
// has never seen (each uncached case uses a blob nobody asked skiff for before).
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { Registry } from "./harness/registry.ts";
import { Skiff } from "./harness/skiff.ts";
import { OciLayout, buildImage, pushImage, type ImageInfo, type LayerInfo } from "./harness/images.ts";
import { parseByteranges, transfer } from "./harness/http.ts";
import { listAllPaths } from "./harness/files.ts";
import { tempDir } from "./harness/workdir.ts";
import { waitFor } from "./harness/processes.ts";
import { teardown } from "./harness/teardown.ts";

const REPO = "e2e/ranges";
let registry: Registry;
let skiff: Skiff;
let image: ImageInfo;
let cached: LayerInfo;
let etagTemplate: string | null = null;
const fresh: LayerInfo[] = [];

/** A blob skiff has not been asked for yet (each uncached case takes its own). */
function takeFresh(): LayerInfo {
  const l = fresh.shift();
  if (l === undefined) throw new Error("test image has too few layers for the uncached cases");
  return l;
}

const blobUrl = (digest: string) => `${skiff.url}/v2/${REPO}/blobs/${digest}`;
const bytesOf = (l: LayerInfo) => image.layout.readBlob(l.digest);
/** The strong ETag skiff uses for `digest`, derived from the one it sent for the cached blob. */
const etagFor = (digest: string) => (etagTemplate ?? `"${cached.digest}"`).replace(cached.digest, digest);
const registryBlobGets = (digest: string) =>
  registry.accessLog().filter((l) => l.method === "GET" && l.path.startsWith(`/v2/${REPO}/blobs/${digest}`)).length;

beforeAll(async () => {
  registry = await Registry.start({ name: "ranges-registry" });
  const layout = new OciLayout(tempDir("ranges-layout"));
  // One file of ~300 KB random data per layer: layers of ~300 KB that gzip cannot shrink.
  image = buildImage(layout, { tag: "v1", seed: "ranges", layers: 14, filesPerLayer: 1, fileSize: 300_000 });
  await pushImage(layout, "v1", `${registry.hostPort}/${REPO}:v1`);
  skiff = await Skiff.start({ upstream: registry.url });
  cached = image.layers[0]!;
  fresh.push(...image.layers.slice(1));
  // Warm the cache with a full GET and wait until the store holds the blob.
  const t = await transfer(blobUrl(cached.digest));
  expect(t.status).toBe(200);
  expect(t.body.equals(bytesOf(cached))).toBe(true);
  const hex = cached.digest.slice("sha256:".length);
  await waitFor("the cached blob in skiff's store", () =>
    listAllPaths(skiff.dataDir).some((p) => p.includes(hex)) ? true : undefined,
  );
});

afterAll(async () => {
  await skiff?.stop();
  await registry?.stop();
  await teardown();
});

type Which = "cached" | "uncached";

/** Run `check` for the cached blob and for a fresh one; for the cached one, the registry must not be asked. */
function bothWays(name: string, check: (layer: LayerInfo, which: Which) => Promise<void>): void {
  test(`${name} (cached blob)`, async () => {
    const before = registryBlobGets(cached.digest);
    await check(cached, "cached");
    expect(registryBlobGets(cached.digest), "blob GETs that reached the registry for a cached blob").toBe(before);
  });
  test(`${name} (uncached blob)`, async () => {
    await check(takeFresh(), "uncached");
  });
}

async function expectRange(layer: LayerInfo, range: string, start: number, endInclusive: number): Promise<void> {
  const all = bytesOf(layer);
  const t = await transfer(blobUrl(layer.digest), { headers: { range } });
  expect(t.status, `Range: ${range}`).toBe(206);
  expect(t.headers.get("content-range"), `Range: ${range}`).toBe(`bytes ${start}-${endInclusive}/${all.length}`);
  expect(t.complete).toBe(true);
  expect(t.body.length).toBe(endInclusive - start + 1);
  expect(t.body.equals(all.subarray(start, endInclusive + 1)), `body of Range: ${range}`).toBe(true);
}

describe("blob ranges through skiff", () => {
  bothWays("HEAD: Accept-Ranges, Content-Length, Docker-Content-Digest, ETag", async (layer) => {
    const res = await fetch(blobUrl(layer.digest), { method: "HEAD" });
    expect(res.status).toBe(200);
    expect(res.headers.get("accept-ranges")).toBe("bytes");
    expect(res.headers.get("content-length")).toBe(String(layer.size));
    expect(res.headers.get("docker-content-digest")).toBe(layer.digest);
    const etag = res.headers.get("etag");
    expect(etag, "strong ETag naming the digest").toMatch(/^"[^"]+"$/);
    expect(etag).toContain(layer.digest);
    if (layer === cached) etagTemplate = etag;
  });

  bothWays("full GET", async (layer) => {
    const t = await transfer(blobUrl(layer.digest));
    expect(t.status).toBe(200);
    expect(t.complete).toBe(true);
    expect(t.headers.get("docker-content-digest")).toBe(layer.digest);
    expect(t.body.equals(bytesOf(layer))).toBe(true);
  });

  bothWays("single range in the middle", async (layer) => {
    await expectRange(layer, "bytes=1000-70999", 1000, 70999);
  });

  bothWays("first byte only", async (layer) => {
    await expectRange(layer, "bytes=0-0", 0, 0);
  });

  bothWays("open-ended range", async (layer) => {
    const from = layer.size - 12345;
    await expectRange(layer, `bytes=${from}-`, from, layer.size - 1);
  });

  bothWays("suffix range", async (layer) => {
    await expectRange(layer, "bytes=-4096", layer.size - 4096, layer.size - 1);
  });

  bothWays("end past the size is clamped", async (layer) => {
    await expectRange(layer, `bytes=${layer.size - 100}-${layer.size + 5000}`, layer.size - 100, layer.size - 1);
  });

  bothWays("start past the size is 416 with Content-Range bytes */size", async (layer) => {
    const t = await transfer(blobUrl(layer.digest), { headers: { range: `bytes=${layer.size + 10}-` } });
    expect(t.status).toBe(416);
    expect(t.headers.get("content-range")).toBe(`bytes */${layer.size}`);
  });

  bothWays("If-Range with the current ETag gives the range", async (layer) => {
    const t = await transfer(blobUrl(layer.digest), { headers: { range: "bytes=500-1499", "if-range": etagFor(layer.digest) } });
    expect(t.status).toBe(206);
    expect(t.headers.get("content-range")).toBe(`bytes 500-1499/${layer.size}`);
    expect(t.body.equals(bytesOf(layer).subarray(500, 1500))).toBe(true);
  });

  bothWays("If-Range with a stale ETag gives the whole blob", async (layer) => {
    const t = await transfer(blobUrl(layer.digest), {
      headers: { range: "bytes=500-1499", "if-range": `"sha256:${"0".repeat(64)}"` },
    });
    expect(t.status).toBe(200);
    expect(t.headers.get("content-range")).toBeNull();
    expect(t.complete).toBe(true);
    expect(t.body.equals(bytesOf(layer))).toBe(true);
  });

  bothWays("multi-range gives multipart/byteranges with each part exact", async (layer) => {
    const all = bytesOf(layer);
    const size = all.length;
    const wanted: [number, number][] = [
      [0, 99],
      [5000, 9999],
      [size - 300, size - 1],
    ];
    const t = await transfer(blobUrl(layer.digest), { headers: { range: "bytes=0-99,5000-9999,-300" } });
    expect(t.status).toBe(206);
    expect(t.complete).toBe(true);
    expect(t.headers.get("content-type")).toMatch(/^multipart\/byteranges;/);
    const parts = parseByteranges(t.body, t.headers.get("content-type"));
    expect(parts.map((p) => [p.start, p.end])).toEqual(wanted);
    for (const p of parts) {
      expect(p.size).toBe(size);
      expect(p.body.equals(all.subarray(p.start, p.end + 1)), `part ${p.start}-${p.end}`).toBe(true);
    }
  });
});

