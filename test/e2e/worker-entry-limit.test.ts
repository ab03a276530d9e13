// Layers of hundreds of thousands of files through the Worker in workerd, with the V8 heap limited to
// a Worker's 128 MB (workerd run locally has no limit of its own; over it, workerd ends with a fatal
// error). The Worker's default MAX_LAYER_ENTRIES follows from its 128 MB (entryLimitForMemory): a
// node_modules-like layer of 300,000 files (340,000 tar entries) converts, and so does its image,
// which is the layer's bootstrap without a merge (its only layer flags are implicit directories);
// a layer just over the limit is refused with the OCI error the Node proxy gives over
// --max-layer-entries (422 MANIFEST_INVALID), and the Worker goes on serving — not an ended isolate.
// So is an image of two layers that are too many entries together to merge (mergeLimitForMemory),
// while two layers just under that limit, sharing no path, merge within the heap.
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { renameSync, rmSync } from "node:fs";
import { join } from "node:path";
import { Registry } from "./harness/registry.ts";
import { WorkerSkiff } from "./harness/worker.ts";
import { MT, OciLayout, pushImage } from "./harness/images.ts";
import { transfer, ociErrorCodes, type Transfer } from "./harness/http.ts";
import { tempDir } from "./harness/workdir.ts";
import { teardown } from "./harness/teardown.ts";
import { writeNodeModulesLayer } from "../../bench/entry-memory-layer.mjs";
import { mergeLimitForMemory } from "../../src/convert/image.ts";
import { entryLimitForMemory } from "../../src/convert/layer.ts";
import { Bootstrap } from "../../src/format/decode.ts";
import { imageOfOneLayer } from "../../src/format/encode.ts";
import { FLAG_IMPLICIT } from "../../src/format/layout.ts";

const LIMIT = entryLimitForMemory(128 * 2 ** 20);
const MERGE_LIMIT = mergeLimitForMemory(128 * 2 ** 20);
const HEAP_LIMIT_MB = 128;
const TEN_MINUTES = 600_000;
const MiB = 2 ** 20;

let registry: Registry;
let worker: WorkerSkiff;
const manifests: Record<string, { digest: string; entries: number; layers: string[] }> = {};

/**
 * An image of node_modules-like layers of `files` files each, pushed as e2e/modules:`tag`; each layer
 * under its own root when `roots` are given (no shared paths: the merged tree holds them all).
 */
async function pushModules(tag: string, files: number[], roots?: string[]): Promise<void> {
  const layout = new OciLayout(tempDir(`entry-limit-${tag}`));
  const layers = files.map((n, i) => {
    const path = join(layout.dir, `layer-${i}.tar.gz`);
    // Another file count per layer: layers of the same content would be one blob.
    const layer = writeNodeModulesLayer(path, n + i, roots?.[i]);
    renameSync(path, layout.blobPath(layer.digest));
    return layer;
  });
  const config = layout.writeBlob(Buffer.from(JSON.stringify({ architecture: "amd64", os: "linux", rootfs: { type: "layers", diff_ids: [] }, config: {} })), MT.config);
  const manifest = layout.writeBlob(
    Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MT.manifest, config, layers: layers.map((l) => ({ mediaType: MT.layerGzip, digest: l.digest, size: l.size })) })),
    MT.manifest,
  );
  layout.tag(tag, manifest);
  await pushImage(layout, tag, `${registry.hostPort}/e2e/modules:${tag}`, { timeoutMs: TEN_MINUTES });
  rmSync(layout.dir, { recursive: true, force: true });
  manifests[tag] = { digest: manifest.digest, entries: layers.reduce((n, l) => n + l.entries, 0), layers: layers.map((l) => l.digest) };
}

/**
 * A GET, sent again (up to twice) when the connection is found closed: after a long request workerd
 * may close the kept-alive connection just as the client reuses it. A Worker that died would refuse
 * the new connections as well.
 */
async function get(url: string): Promise<Transfer> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await transfer(url, {}, TEN_MINUTES);
    } catch (err) {
      if (attempt === 3) throw err;
      await new Promise((r) => setTimeout(r, 500));
    }
  }
}

/** The image bootstrap, asked again while the Worker answers 202 (converting). */
function bootstrap(tag: string): Promise<Transfer> {
  return untilConverted(`${worker.url}/v2/e2e/modules/_skiff/bootstrap/${manifests[tag]!.digest}`);
}

/** The first layer's own bootstrap (no merge), asked again while the Worker converts it. */
function layerBootstrap(tag: string): Promise<Transfer> {
  return untilConverted(`${worker.url}/v2/e2e/modules/_skiff/layers/${manifests[tag]!.layers[0]}/v1-c20-none/bootstrap`);
}

/** A GET asked again while the answer is 202 or 503 + Retry-After (converting). */
async function untilConverted(url: string): Promise<Transfer> {
  let res = await get(url);
  for (let i = 0; i < 120 && (res.status === 202 || (res.status === 503 && res.headers.has("retry-after"))); i++) {
    await new Promise((r) => setTimeout(r, 1000));
    res = await get(url);
  }
  return res;
}

beforeAll(async () => {
  registry = await Registry.start({ name: "worker-entry-limit-registry" });
  await pushModules("fits", [300_000]);
  // Just over the limit: a few more files than the limit's entries (directories come on top).
  await pushModules("over", [LIMIT]);
  // Two layers, each far under the layer limit, that together are more than a merge fits.
  await pushModules("two", [MERGE_LIMIT / 2, MERGE_LIMIT / 2]);
  // Two layers that share no path, together just under it (about 1.13 entries a file).
  const underFiles = Math.floor(MERGE_LIMIT / 2 / 1.15);
  await pushModules("merges", [underFiles, underFiles], ["node_modules", "srv/app/node_modules"]);
  worker = await WorkerSkiff.start({ upstream: registry.url, inspect: true, heapLimitMb: HEAP_LIMIT_MB });
}, TEN_MINUTES);

afterAll(async () => {
  await worker?.stop();
  await registry?.stop();
  await teardown();
}, 120_000);

describe("a Worker's entry limit", () => {
  test(`a layer of 300,000 files and its image convert in workerd within a ${HEAP_LIMIT_MB} MB heap, under the limit of ${LIMIT} entries`, async () => {
    expect(manifests.fits!.entries).toBeLessThan(LIMIT);
    worker.resetWorkerdVmHWM();
    const sampler = await worker.heapSampler();
    const started = Date.now();
    const res = await layerBootstrap("fits");
    const heap = await sampler.stop();
    expect(res.status, res.body.toString("utf8").slice(0, 500)).toBe(200);
    const b = Bootstrap.decode(res.body);
    // The root and every directory and file; the tar's entries repeat a few scope directories.
    expect(b.inodeCount).toBeGreaterThan(300_000);
    expect(b.lookup("/node_modules")).not.toBeNull();
    const seconds = (Date.now() - started) / 1000;
    console.log(
      `worker entry limit: ${manifests.fits!.entries} entries converted in ${seconds.toFixed(1)} s with a ${HEAP_LIMIT_MB} MB V8 heap limit; the Worker's V8 heap and array buffers at most ${(heap.withGarbage / MiB).toFixed(1)} MiB, ` +
        `garbage not yet collected included (${heap.samples} samples through the inspector); workerd VmHWM ${(worker.workerdVmHWMBytes() / MiB).toFixed(0)} MiB`,
    );
    expect(heap.samples).toBeGreaterThan(0);
    // The tar leaves the root implied, so the layer has an implicit directory: its image is still
    // the layer's own bootstrap, without the merge a Worker could not hold at this size.
    expect(b.layerFlags).toBe(FLAG_IMPLICIT);
    const image = await bootstrap("fits");
    expect(image.status, image.body.toString("utf8").slice(0, 500)).toBe(200);
    expect(Buffer.from(imageOfOneLayer(b, "linux/amd64")!).equals(image.body)).toBe(true);
    expect(worker.log()).not.toMatch(/heap limit|out of memory|fatal/i);
  }, TEN_MINUTES);

  test("a layer over the limit is refused with 422 MANIFEST_INVALID, and the Worker goes on serving", async () => {
    expect(manifests.over!.entries).toBeGreaterThan(LIMIT);
    const res = await bootstrap("over");
    expect(res.status, res.body.toString("utf8").slice(0, 500)).toBe(422);
    expect(ociErrorCodes(res)).toEqual(["MANIFEST_INVALID"]);
    expect(res.body.toString("utf8")).toContain(`has more than ${LIMIT} entries`);
    // Asked again: the same refusal, from a Worker that is still there.
    const again = await bootstrap("over");
    expect(again.status).toBe(422);
    expect((await get(`${worker.url}/v2/`)).status).toBe(200);
    expect(worker.log()).not.toMatch(/out of memory|exceeded memory|isolate.*(terminated|killed)/i);
  }, TEN_MINUTES);

  test(`an image of two layers of ${MERGE_LIMIT} entries or fewer together merges in workerd within a ${HEAP_LIMIT_MB} MB heap`, async () => {
    expect(manifests.merges!.entries).toBeLessThanOrEqual(MERGE_LIMIT);
    expect(manifests.merges!.entries).toBeGreaterThan(MERGE_LIMIT * 0.95);
    const sampler = await worker.heapSampler();
    const started = Date.now();
    const res = await bootstrap("merges");
    const heap = await sampler.stop();
    expect(res.status, res.body.toString("utf8").slice(0, 500)).toBe(200);
    const image = Bootstrap.decode(res.body);
    expect(image.blobCount).toBe(2);
    // Every inode of both layers, but for the one root they share.
    expect(image.inodeCount).toBeGreaterThan(manifests.merges!.entries * 0.99);
    expect(image.lookup("/node_modules")).not.toBeNull();
    expect(image.lookup("/srv/app/node_modules")).not.toBeNull();
    console.log(
      `worker merge: ${image.inodeCount} inodes converted and merged from 2 layers in ${((Date.now() - started) / 1000).toFixed(1)} s with a ${HEAP_LIMIT_MB} MB V8 heap limit; ` +
        `the Worker's V8 heap and array buffers at most ${(heap.withGarbage / MiB).toFixed(1)} MiB, garbage not yet collected included (${heap.samples} samples)`,
    );
    expect(heap.samples).toBeGreaterThan(0);
    expect(worker.log()).not.toMatch(/heap limit|out of memory|fatal/i);
  }, TEN_MINUTES);

  test("an image whose layers together are more than a merge fits is refused with 422, each layer converted", async () => {
    expect(manifests.two!.entries).toBeGreaterThan(MERGE_LIMIT);
    const res = await bootstrap("two");
    expect(res.status, res.body.toString("utf8").slice(0, 500)).toBe(422);
    expect(ociErrorCodes(res)).toEqual(["MANIFEST_INVALID"]);
    expect(res.body.toString("utf8")).toContain(`more than the ${MERGE_LIMIT} this converter can merge`);
    expect((await get(`${worker.url}/v2/`)).status).toBe(200);
  }, TEN_MINUTES);
});
