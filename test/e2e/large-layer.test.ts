// A layer larger than 1 GiB streams through skiff: the pulled blob is exact, and skiff's peak
// memory stays far below the layer's size.
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { rmSync } from "node:fs";
import { join } from "node:path";
import { Registry } from "./harness/registry.ts";
import { Skiff } from "./harness/skiff.ts";
import { OciLayout, buildLargeImage, pushImage, type ImageInfo } from "./harness/images.ts";
import { skopeoCopy } from "./harness/skopeo.ts";
import { sha256File } from "./harness/files.ts";
import { tempDir } from "./harness/workdir.ts";
import { teardown } from "./harness/teardown.ts";

const GiB = 1024 * 1024 * 1024;
const MiB = 1024 * 1024;
const TEN_MINUTES = 600_000;

let registry: Registry;
let skiff: Skiff;
let image: ImageInfo;
let layoutDir: string;
const bigDirs: string[] = [];

beforeAll(async () => {
  registry = await Registry.start({ name: "large-registry" });
  bigDirs.push(registry.storageDir);
  layoutDir = tempDir("large-layout");
  bigDirs.push(layoutDir);
  image = await buildLargeImage(new OciLayout(layoutDir), { tag: "big", seed: "large-layer", layerBytes: GiB });
  await pushImage(image.layout, "big", `${registry.hostPort}/e2e/large:big`, { timeoutMs: TEN_MINUTES });
  // The generated layer is no longer needed once the registry has it.
  rmSync(image.layout.blobPath(image.layers[0]!.digest), { force: true });
  skiff = await Skiff.start({ upstream: registry.url });
  bigDirs.push(skiff.dataDir);
}, TEN_MINUTES);

afterAll(async () => {
  await skiff?.stop();
  await registry?.stop();
  for (const d of bigDirs) rmSync(d, { recursive: true, force: true });
  await teardown();
}, 120_000);

describe("large layer", () => {
  test("a ≥ 1 GiB layer pulls through skiff intact with skiff's VmHWM < 200 MiB", async () => {
    const layer = image.layers[0]!;
    expect(layer.size).toBeGreaterThanOrEqual(GiB);
    const out = tempDir("large-pull");
    bigDirs.push(out);
    await skopeoCopy(`docker://${skiff.hostPort}/e2e/large:big`, `dir:${out}`, { timeoutMs: TEN_MINUTES });
    const pulled = join(out, layer.digest.slice("sha256:".length));
    expect(await sha256File(pulled)).toBe(layer.digest);
    rmSync(out, { recursive: true, force: true });

    const hwm = skiff.vmHWMBytes();
    console.log(`large layer: ${layer.size} bytes; skiff VmHWM ${(hwm / MiB).toFixed(1)} MiB`);
    expect(hwm, `skiff VmHWM ${(hwm / MiB).toFixed(1)} MiB`).toBeLessThan(200 * MiB);
    const served = await skiff.metric("skiff_served_bytes_total");
    expect(served).toBeGreaterThanOrEqual(layer.size);
    const upstreamBytes = await skiff.metric("skiff_upstream_bytes_total");
    expect(upstreamBytes).toBeGreaterThanOrEqual(layer.size);
  }, TEN_MINUTES);
});
