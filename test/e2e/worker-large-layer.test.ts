// A layer larger than 1 GiB streams through the Worker in workerd: from the upstream to the client
// and into R2 (multipart) at once, exact; then again from R2, to skopeo and to a client that takes
// nothing until workerd's memory stops growing. workerd's peak memory in each round stays below half
// the layer: that workerd runs the Worker and Miniflare's local R2 (no wrangler dev proxies), so
// neither holds the layer whole. The Worker's own buffering is bounded by design (R2Store: two parts
// per upload; test/unit/r2-store.test.ts). Under `wrangler dev` this took minutes more, or failed:
// its inspector proxy forwards each chunk the Worker fetches to Node as a separate request.
//
// Before the rounds from R2 the stored layer is rewritten as one part: Miniflare's local R2 reads a
// multipart object ahead of a slow reader, up to the whole object in memory (skopeo, slower than
// the local disk: 1.2 to 1.4 GB VmHWM; worker-runner.mjs has the details). R2 itself streams with backpressure,
// as local R2 does a single-part object, so what is measured then is skiff's own buffering.
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { createHash } from "node:crypto";
import { rmSync } from "node:fs";
import { join } from "node:path";
import { Registry } from "./harness/registry.ts";
import { WorkerSkiff } from "./harness/worker.ts";
import { OciLayout, buildLargeImage, pushImage, type ImageInfo } from "./harness/images.ts";
import { skopeoCopy } from "./harness/skopeo.ts";
import { sha256File } from "./harness/files.ts";
import { tempDir } from "./harness/workdir.ts";
import { teardown } from "./harness/teardown.ts";
import { sleep } from "./harness/processes.ts";
import { parseDigest } from "../../src/oci/reference.ts";
import { blobKey } from "../../src/store/keys.ts";

const GiB = 1024 * 1024 * 1024;
const MiB = 1024 * 1024;
const TEN_MINUTES = 600_000;
/** The whole test: two pulls of the layer, its rewrite in local R2 and a stalled read, on a busy disk. */
const TWENTY_MINUTES = 1_200_000;

let registry: Registry;
let worker: WorkerSkiff;
let image: ImageInfo;
const bigDirs: string[] = [];

beforeAll(async () => {
  registry = await Registry.start({ name: "worker-large-registry" });
  bigDirs.push(registry.storageDir);
  const layoutDir = tempDir("worker-large-layout");
  bigDirs.push(layoutDir);
  image = await buildLargeImage(new OciLayout(layoutDir), { tag: "big", seed: "worker-large-layer", layerBytes: GiB });
  await pushImage(image.layout, "big", `${registry.hostPort}/e2e/large:big`, { timeoutMs: TEN_MINUTES });
  rmSync(image.layout.blobPath(image.layers[0]!.digest), { force: true });
  worker = await WorkerSkiff.start({ upstream: registry.url });
  bigDirs.push(worker.persistDir);
}, TEN_MINUTES);

afterAll(async () => {
  await worker?.stop();
  await registry?.stop();
  for (const d of bigDirs) rmSync(d, { recursive: true, force: true });
  await teardown();
}, 120_000);

describe("large layer through the Worker", () => {
  test("a ≥ 1 GiB layer pulls through workerd intact, cold and then from R2", async () => {
    const layer = image.layers[0]!;
    expect(layer.size).toBeGreaterThanOrEqual(GiB);
    const report = (round: string, started: number) => {
      const peak = worker.workerdVmHWMBytes();
      const seconds = (Date.now() - started) / 1000;
      console.log(`worker large layer ${round}: ${layer.size} bytes in ${seconds.toFixed(1)} s; workerd VmHWM ${(peak / MiB).toFixed(0)} MiB`);
      return peak;
    };
    for (const round of ["cold", "from R2"]) {
      if (round === "from R2") {
        const rewriting = Date.now();
        await worker.storeAsSinglePart(blobKey(parseDigest(layer.digest)!), TEN_MINUTES);
        console.log(`worker large layer: rewritten as one part in local R2 in ${((Date.now() - rewriting) / 1000).toFixed(1)} s`);
      }
      worker.resetWorkerdVmHWM();
      const out = tempDir("worker-large-pull");
      const started = Date.now();
      await skopeoCopy(`docker://${worker.hostPort}/e2e/large:big`, `dir:${out}`, { timeoutMs: TEN_MINUTES });
      expect(await sha256File(join(out, layer.digest.slice("sha256:".length)))).toBe(layer.digest);
      rmSync(out, { recursive: true, force: true });
      expect(report(round, started)).toBeLessThan(layer.size / 2);
    }

    // A client slower than R2, made certain: it takes nothing until whatever sits between R2 and its
    // socket is full, then reads it all. A path without backpressure would hold the layer by then.
    worker.resetWorkerdVmHWM();
    const started = Date.now();
    const res = await fetch(`${worker.url}/v2/e2e/large/blobs/${layer.digest}`, { signal: AbortSignal.timeout(TEN_MINUTES) });
    expect(res.status).toBe(200);
    await untilWorkerdSettles();
    const hash = createHash("sha256");
    const reader = res.body!.getReader();
    for (let r = await reader.read(); !r.done; r = await reader.read()) hash.update(r.value);
    expect(`sha256:${hash.digest("hex")}`).toBe(layer.digest);
    expect(report("from R2, stalled client", started)).toBeLessThan(layer.size / 2);
  }, TWENTY_MINUTES);
});

/** Waits until workerd's resident memory has grown by less than 8 MiB over 3 s (2 minutes at most). */
async function untilWorkerdSettles(): Promise<void> {
  const rss: number[] = [];
  for (let i = 0; i < 240; i++) {
    rss.push(worker.workerdVmRSSBytes());
    const last = rss.slice(-7);
    if (last.length === 7 && Math.max(...last) - Math.min(...last) < 8 * MiB) return;
    await sleep(500);
  }
}
