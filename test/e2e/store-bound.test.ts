// skiff with --max-store-size well below what three images need, in front of the real registry. The
// store's files, sampled every few milliseconds while skopeo pulls and the lazy API converts, never
// add up to more than the bound. Every pull is byte-identical to a direct one, including the
// repeat of an image evicted meanwhile, and a node holding that image's bootstrap from before
// still gets every chunk (converted again) without asking for the bootstrap first. The images'
// configs are never evicted.
import { createHash } from "node:crypto";
import { existsSync, readdirSync, rmSync, statSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { Bootstrap } from "../../src/format/decode.ts";
import { toHex } from "../../src/hash/hasher.ts";
import { compareTrees } from "./harness/files.ts";
import { transfer } from "./harness/http.ts";
import { buildImage, OciLayout, pushImage, type ImageInfo } from "./harness/images.ts";
import { Registry } from "./harness/registry.ts";
import { Skiff } from "./harness/skiff.ts";
import { skopeoCopy } from "./harness/skopeo.ts";
import { teardown } from "./harness/teardown.ts";
import { tempDir } from "./harness/workdir.ts";

const MiB = 1024 * 1024;
// Each image: two layers of about 3 MiB of random bytes (6 MiB of blobs) and as much converted
// data, 12 MiB in the store; three need 36 MiB. A pull and a conversion of one image fit in 16.
const BOUND = 16 * MiB;
const repo = (i: number) => `e2e/bounded-${i}`;

let registry: Registry;
let skiff: Skiff;
const images: ImageInfo[] = [];
const direct: string[] = [];

/**
 * The bytes of every file under `dir` (uploads in progress included), walked now. By inode: an
 * upload renamed into place while the walk goes on would otherwise be counted twice.
 */
function storeBytes(dir: string, seen = new Map<number, number>()): number {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    try {
      if (entry.isDirectory()) storeBytes(path, seen);
      else if (entry.isFile()) {
        const s = statSync(path);
        seen.set(s.ino, s.size);
      }
    } catch {
      // removed between the listing and the stat: evicted, or an upload renamed into place
    }
  }
  return [...seen.values()].reduce((a, b) => a + b, 0);
}

/** Samples the store's size every few milliseconds until stopped; the largest seen. */
function sampleStore(dir: string): { stop(): number; samples(): number } {
  let largest = 0;
  let count = 0;
  const timer = setInterval(() => {
    largest = Math.max(largest, storeBytes(dir));
    count++;
  }, 5);
  return {
    stop: () => {
      clearInterval(timer);
      return Math.max(largest, storeBytes(dir));
    },
    samples: () => count,
  };
}

beforeAll(async () => {
  registry = await Registry.start({ name: "bounded-registry" });
  for (let i = 0; i < 3; i++) {
    const layout = new OciLayout(tempDir(`bounded-layout-${i}`));
    images.push(buildImage(layout, { tag: "v1", seed: `store-bound-${i}`, layers: 2, filesPerLayer: 3, fileSize: MiB }));
    await pushImage(layout, "v1", `${registry.hostPort}/${repo(i)}:v1`);
    const out = tempDir(`bounded-direct-${i}`);
    await skopeoCopy(`docker://${registry.hostPort}/${repo(i)}:v1`, `dir:${out}`);
    direct.push(out);
  }
  skiff = await Skiff.start({ upstream: registry.url, extraArgs: ["--max-store-size", String(BOUND)] });
}, 180_000);

afterAll(async () => {
  await skiff?.stop();
  await registry?.stop();
  await teardown();
});

/** skopeo through skiff: the same files as the direct copy. */
async function pullMatches(i: number): Promise<void> {
  const out = tempDir(`bounded-via-${i}`);
  await skopeoCopy(`docker://${skiff.hostPort}/${repo(i)}:v1`, `dir:${out}`, { timeoutMs: 120_000 });
  const diff = compareTrees(direct[i]!, out);
  expect(diff.different, `image ${i}`).toEqual([]);
  expect(diff.onlyInA, `image ${i}`).toEqual([]);
}

async function bootstrapOf(i: number): Promise<Buffer> {
  const t = await transfer(`${skiff.url}/v2/${repo(i)}/_skiff/bootstrap/v1`, { headers: { "accept-encoding": "identity" } }, 120_000);
  expect(t.status, t.body.toString("utf8").slice(0, 300)).toBe(200);
  return t.body;
}

/** Every chunk of the bootstrap from the chunk route, each checked against its sha256. */
async function chunksMatch(i: number, bootstrapBytes: Buffer): Promise<number> {
  const b = Bootstrap.decode(bootstrapBytes);
  const params = "v1-c20-none";
  for (let c = 0; c < b.chunkCount; c++) {
    const rec = b.chunk(c);
    const layer = b.blob(rec.blob).layerDigest;
    const hex = toHex(rec.digest);
    const t = await transfer(`${skiff.url}/v2/${repo(i)}/_skiff/layers/${layer}/${params}/chunks/${hex}.none`, {}, 120_000);
    expect(t.status, `image ${i} chunk ${c}: ${t.body.toString("utf8").slice(0, 300)}`).toBe(200);
    expect(createHash("sha256").update(t.body).digest("hex"), `image ${i} chunk ${c}`).toBe(hex);
  }
  return b.chunkCount;
}

describe("a store bounded below what three images need", () => {
  test("stays within the bound while pulls and conversions run, and every pull is byte-identical, evicted images included", async () => {
    const sampler = sampleStore(skiff.dataDir);
    const first: Buffer[] = [];
    try {
      for (let i = 0; i < 3; i++) {
        await pullMatches(i);
        first.push(await bootstrapOf(i));
        expect(await chunksMatch(i, first[i]!)).toBeGreaterThan(0);
      }
      const evicted = await skiff.metric("skiff_store_evictions_total");
      expect(evicted).toBeGreaterThan(0);

      // Image 0 went first: a node that holds its bootstrap reads its chunks, converted again.
      expect(await chunksMatch(0, first[0]!)).toBeGreaterThan(0);
      expect(await bootstrapOf(0)).toEqual(first[0]);
      await pullMatches(0);
      expect(await skiff.metric("skiff_store_refetches_total")).toBeGreaterThan(0);
    } finally {
      const largest = sampler.stop();
      expect(sampler.samples()).toBeGreaterThan(10);
      expect(largest, `largest store size sampled: ${largest} bytes`).toBeLessThanOrEqual(BOUND);
    }
    // The configs of the cached images stay, as their manifests do.
    for (const image of images) {
      const hex = image.config.digest.slice("sha256:".length);
      expect(existsSync(join(skiff.dataDir, "blobs", "sha256", hex.slice(0, 2), hex)), image.config.digest).toBe(true);
    }
    expect(await skiff.metric("skiff_store_bytes")).toBeLessThanOrEqual(BOUND);
    expect(await skiff.metric("skiff_store_max_bytes")).toBe(BOUND);
  }, 300_000);

  test("a converted layer whose data went behind skiff's back: 503 + Retry-After once, then converted again", async () => {
    const boot = Bootstrap.decode(await bootstrapOf(2));
    const rec = boot.chunk(0);
    const layer = boot.blob(rec.blob).layerDigest;
    const hex = layer.slice("sha256:".length);
    rmSync(join(skiff.dataDir, "converted", "layers", "sha256", hex.slice(0, 2), hex, "v1-c20-none", "data"));
    const url = `${skiff.url}/v2/${repo(2)}/_skiff/layers/${layer}/v1-c20-none/chunks/${toHex(rec.digest)}.none`;
    const first = await transfer(url, {}, 60_000);
    expect(first.status, first.body.toString("utf8").slice(0, 300)).toBe(503);
    expect(first.headers.get("retry-after")).toBe("1");
    const again = await transfer(url, {}, 120_000);
    expect(again.status, again.body.toString("utf8").slice(0, 300)).toBe(200);
    expect(createHash("sha256").update(again.body).digest("hex")).toBe(toHex(rec.digest));
  }, 180_000);
});
