// A layer larger than 1 GiB streams through the Worker in workerd: from the upstream to the client
// and into R2 (multipart) at once, exact; then again from R2. workerd's peak memory stays below half
// the layer: that workerd runs the Worker and Miniflare's local R2 (no wrangler dev proxies), so
// neither holds the layer whole. The Worker's own buffering is bounded by design (R2Store: two parts
// per upload; test/unit/r2-store.test.ts). Under `wrangler dev` this took minutes more, or failed:
// its inspector proxy forwards each chunk the Worker fetches to Node as a separate request.
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { rmSync } from "node:fs";
import { join } from "node:path";
import { Registry } from "./harness/registry.ts";
import { WorkerSkiff } from "./harness/worker.ts";
import { OciLayout, buildLargeImage, pushImage, type ImageInfo } from "./harness/images.ts";
import { skopeoCopy } from "./harness/skopeo.ts";
import { sha256File } from "./harness/files.ts";
import { tempDir } from "./harness/workdir.ts";
import { teardown } from "./harness/teardown.ts";

const GiB = 1024 * 1024 * 1024;
const MiB = 1024 * 1024;
const TEN_MINUTES = 600_000;

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
    for (const round of ["cold", "from R2"]) {
      const out = tempDir("worker-large-pull");
      const started = Date.now();
      await skopeoCopy(`docker://${worker.hostPort}/e2e/large:big`, `dir:${out}`, { timeoutMs: TEN_MINUTES });
      const seconds = (Date.now() - started) / 1000;
      expect(await sha256File(join(out, layer.digest.slice("sha256:".length)))).toBe(layer.digest);
      rmSync(out, { recursive: true, force: true });
      const peak = worker.workerdVmHWMBytes();
      console.log(`worker large layer ${round}: ${layer.size} bytes in ${seconds.toFixed(1)} s; workerd VmHWM ${(peak / MiB).toFixed(0)} MiB`);
      expect(peak).toBeLessThan(layer.size / 2);
    }
  }, TEN_MINUTES);
});
