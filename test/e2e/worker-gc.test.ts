// The Worker's scheduled sweep in workerd with local R2: orphans planted in the bucket (a converted
// layer's data without its bootstrap, steps of a published conversion, a manifest record without
// its manifest) are removed by the cron trigger's handler, once older than SWEEP_GRACE, and nothing
// in use is: the image's bootstrap is answered the same afterwards, from the bucket.
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { transfer } from "./harness/http.ts";
import { buildImage, OciLayout, pushImage } from "./harness/images.ts";
import { sleep } from "./harness/processes.ts";
import { Registry } from "./harness/registry.ts";
import { teardown } from "./harness/teardown.ts";
import { WorkerSkiff } from "./harness/worker.ts";
import { tempDir } from "./harness/workdir.ts";

const REPO = "e2e/worker-gc";
let registry: Registry;
const workers: WorkerSkiff[] = [];

beforeAll(async () => {
  registry = await Registry.start({ name: "worker-gc-registry" });
  const layout = new OciLayout(tempDir("worker-gc-layout"));
  buildImage(layout, { tag: "v1", seed: "worker-gc", layers: 2, filesPerLayer: 2 });
  await pushImage(layout, "v1", `${registry.hostPort}/${REPO}:v1`);
}, 120_000);

afterAll(async () => {
  for (const w of workers) await w.stop();
  await registry?.stop();
  await teardown();
});

async function start(persistDir: string, vars: Record<string, string> = {}): Promise<WorkerSkiff> {
  const w = await WorkerSkiff.start({ upstream: registry.url, persistDir, vars });
  workers.push(w);
  return w;
}

/** The image bootstrap, through the 202s of a conversion in steps (bounded). */
async function bootstrap(w: WorkerSkiff): Promise<Buffer> {
  for (let i = 0; i < 100; i++) {
    const t = await transfer(`${w.url}/v2/${REPO}/_skiff/bootstrap/v1`, { headers: { "accept-encoding": "identity" } }, 60_000);
    if (t.status === 200) return t.body;
    expect(t.status, t.body.toString("utf8").slice(0, 300)).toBe(202);
    await sleep(200);
  }
  throw new Error("no bootstrap after 100 tries");
}

describe("the Worker's scheduled sweep", () => {
  test("removes the bucket's orphans once past SWEEP_GRACE, and nothing in use", async () => {
    const persistDir = tempDir("worker-gc-state");
    const first = await start(persistDir);
    const answer = await bootstrap(first);
    const inUse = (await first.bucketKeys()).sort();
    const published = inUse.find((k) => /^converted\/layers\/.+\/bootstrap$/.test(k))!.replace(/\/bootstrap$/, "");
    expect(published).toBeDefined();
    const orphans = [
      `converted/layers/sha256/ab/${"ab".repeat(32)}/v1-c20-none/data`,
      `${published}/steps/segment-3`,
      `manifests/sha256/cd/${"cd".repeat(32)}.meta`,
    ];
    for (const key of orphans) await first.putObject(key, new Uint8Array(100));

    // Within the default grace of an hour: left alone.
    await first.runScheduled();
    expect((await first.bucketKeys()).sort()).toEqual([...inUse, ...orphans].sort());
    expect(first.log()).toMatch(/skiff sweep: removed 0 objects/);
    await first.stop();

    // Past it: the orphans go, and so do the leases the published conversions left (steps too).
    const second = await start(persistDir, { SWEEP_GRACE: "0" });
    await second.runScheduled();
    const leases = inUse.filter((k) => k.endsWith("/steps/lease"));
    expect((await second.bucketKeys()).sort()).toEqual(inUse.filter((k) => !leases.includes(k)));
    expect(second.log()).toMatch(new RegExp(`skiff sweep: removed ${3 + leases.length} objects nothing uses`));
    expect(await bootstrap(second)).toEqual(answer);
  }, 300_000);
});
