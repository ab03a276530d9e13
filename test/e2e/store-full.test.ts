// skiff with its store on a full disk: a small tmpfs in front of the real registry. A full store stops
// caching, not pulling: skopeo still pulls the image, verified, straight from the upstream. What can
// only be answered from the store (a range of an uncached blob, a bootstrap) gets 507 with an OCI
// error that says the store is full. Nothing is half-published when space runs out in the middle
// of a conversion, and once there is room again everything works and is cached.
import { spawnSync } from "node:child_process";
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, statfsSync, writeSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { transfer, type Transfer } from "./harness/http.ts";
import { buildImage, OciLayout, pushImage, sha256, type ImageInfo } from "./harness/images.ts";
import { Registry } from "./harness/registry.ts";
import { Skiff } from "./harness/skiff.ts";
import { skopeoCopy } from "./harness/skopeo.ts";
import { convertedFiles, storeProblems } from "./harness/store-contents.ts";
import { teardown } from "./harness/teardown.ts";
import { tempDir } from "./harness/workdir.ts";

const REPO = "e2e/store-full";
const MiB = 1024 * 1024;
const STORE_SIZE = 24 * MiB;

let registry: Registry;
let skiff: Skiff;
let image: ImageInfo;
let disk: string;
let filler: string;
/** A clean conversion's image bootstrap, and every file under its store's converted/ by path. */
let reference: { bootstrap: Buffer; converted: Map<string, string> };

const bootstrapUrl = (s: Skiff) => `${s.url}/v2/${REPO}/_skiff/bootstrap/v1`;
const blobUrl = (s: Skiff, digest: string) => `${s.url}/v2/${REPO}/blobs/${digest}`;
const freeBytes = () => {
  const st = statfsSync(disk);
  return st.bavail * st.bsize;
};

/** Fills the disk with zeros until at most `leave` bytes are free. */
function fill(leave = 0): void {
  const fd = openSync(filler, "a");
  const zeros = Buffer.alloc(MiB);
  try {
    for (let i = 0; i < STORE_SIZE / MiB + 1 && freeBytes() > leave; i++) {
      writeSync(fd, zeros, 0, Math.min(zeros.length, freeBytes() - leave));
    }
  } catch (err) {
    if ((err as { code?: string }).code !== "ENOSPC") throw err;
  } finally {
    closeSync(fd);
  }
}

const unfill = () => rmSync(filler, { force: true });

/** 507 and an OCI error saying the store is full. */
function expectStoreFull(t: Transfer, what: string): void {
  expect(t.status, `${what}: ${t.body.toString("utf8", 0, 300)}`).toBe(507);
  const doc = JSON.parse(t.body.toString("utf8")) as { errors: { code: string; message: string }[] };
  expect(doc.errors[0]!.code).toBe("UNAVAILABLE");
  expect(doc.errors[0]!.message).toMatch(/store is full \(ENOSPC\)/);
}

beforeAll(async () => {
  registry = await Registry.start({ name: "full-registry" });
  const layout = new OciLayout(tempDir("full-layout"));
  // Two layers of about 3 MiB of random bytes each: the blobs and their conversions need about
  // 12 MiB, half the disk.
  image = buildImage(layout, { tag: "v1", seed: "store-full", layers: 2, filesPerLayer: 3, fileSize: MiB });
  await pushImage(layout, "v1", `${registry.hostPort}/${REPO}:v1`);

  const clean = await Skiff.start({ upstream: registry.url });
  try {
    const t = await transfer(bootstrapUrl(clean));
    expect(t.status).toBe(200);
    reference = { bootstrap: t.body, converted: convertedFiles(clean.dataDir) };
  } finally {
    await clean.stop();
  }

  disk = tempDir("store-disk");
  const mounted = spawnSync("mount", ["-t", "tmpfs", "-o", `size=${STORE_SIZE}`, "tmpfs", disk], { encoding: "utf8" });
  if (mounted.status !== 0) throw new Error(`mount -t tmpfs: ${mounted.stderr}`);
  filler = join(disk, "filler");
  mkdirSync(join(disk, "data"));
  skiff = await Skiff.start({ upstream: registry.url, dataDir: join(disk, "data") });
}, 120_000);

afterAll(async () => {
  await skiff?.stop();
  await registry?.stop();
  if (disk) spawnSync("umount", ["-l", disk]);
  await teardown();
});

describe("the store's disk is full", () => {
  test("skopeo still pulls the image through skiff, verified, and nothing is kept", async () => {
    fill();
    expect(freeBytes()).toBeLessThan(64 * 1024);
    const out = tempDir("full-pull");
    await skopeoCopy(`docker://${skiff.hostPort}/${REPO}:v1`, `dir:${out}`, { timeoutMs: 120_000 });
    for (const layer of image.layers) {
      expect(sha256(readFileSync(join(out, layer.digest.slice("sha256:".length))))).toBe(layer.digest);
    }
    expect(await storeProblems(skiff.dataDir, reference.converted), "after the pull").toEqual([]);
    expect(existsSync(join(skiff.dataDir, "blobs"))).toBe(false);
    expect(skiff.log()).toMatch(/store is full \(ENOSPC\)/);
    expect(skiff.running).toBe(true);
  }, 180_000);

  test("what needs the store gets 507 and a clear OCI error: a range of an uncached blob, a bootstrap", async () => {
    const layer = image.layers[0]!;
    expectStoreFull(await transfer(blobUrl(skiff, layer.digest), { headers: { range: "bytes=0-99" } }), "a range");
    expectStoreFull(await transfer(bootstrapUrl(skiff)), "a bootstrap");
    expect(await storeProblems(skiff.dataDir, reference.converted), "after the refusals").toEqual([]);
    expect(convertedFiles(skiff.dataDir).size).toBe(0);
  }, 60_000);

  test("space running out in the middle of a conversion publishes no image bootstrap and leaves no half object", async () => {
    unfill();
    // Room for the first layer's blob and part of its conversion, not for everything.
    fill(5 * MiB);
    expectStoreFull(await transfer(bootstrapUrl(skiff)), "a bootstrap on a nearly full disk");
    expect(await storeProblems(skiff.dataDir, reference.converted), "after running out mid-conversion").toEqual([]);
    expect([...convertedFiles(skiff.dataDir).keys()].filter((p) => p.startsWith("images/"))).toEqual([]);
    expect(existsSync(join(skiff.dataDir, "blobs")), "the first layer's blob was cached before space ran out").toBe(true);
  }, 60_000);

  test("with room again, the bootstrap is the clean conversion's and the blobs are cached", async () => {
    unfill();
    const t = await transfer(bootstrapUrl(skiff));
    expect(t.status, t.body.toString("utf8", 0, 300)).toBe(200);
    expect(t.body.equals(reference.bootstrap)).toBe(true);
    expect(await storeProblems(skiff.dataDir, reference.converted), "after the conversion").toEqual([]);
    expect(convertedFiles(skiff.dataDir)).toEqual(reference.converted);
    for (const layer of image.layers) {
      const got = await transfer(blobUrl(skiff, layer.digest));
      expect(got.status).toBe(200);
      expect(sha256(got.body)).toBe(layer.digest);
    }
    const hits = await skiff.metric("skiff_cache_hits_total");
    expect(hits).toBeGreaterThanOrEqual(image.layers.length);
  }, 60_000);
});
