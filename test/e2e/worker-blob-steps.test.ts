// A cold blob larger than BLOB_STEP is fetched by the Worker in steps across requests (src/cache/
// blob-steps.ts), in workerd with local R2 in front of a real Distribution registry: each request
// advances it by one ranged upstream GET written as R2 multipart parts, until the step that writes
// the last part verifies the digest and publishes the blob. A small BLOB_STEP (one 8 MiB part) makes
// a ~20 MiB layer take three. Requests meanwhile: a ranged blob GET is answered 503 + Retry-After,
// a bootstrap 202, as they would be for any work in progress; at the end the blob is byte-identical
// to the upstream's. A layer whose upstream bytes were tampered with ends with the digest error and
// nothing published.
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { openSync, readFileSync, statSync, writeSync, closeSync } from "node:fs";
import { Registry } from "./harness/registry.ts";
import { WorkerSkiff } from "./harness/worker.ts";
import { OciLayout, buildImage, pushImage, Prng, sha256, type ImageInfo } from "./harness/images.ts";
import { transfer } from "./harness/http.ts";
import { tempDir } from "./harness/workdir.ts";
import { teardown } from "./harness/teardown.ts";

const MiB = 2 ** 20;
const STEP = 8 * MiB;
let registry: Registry;
let worker: WorkerSkiff;
let good: ImageInfo;
let bad: ImageInfo;
let lazy: ImageInfo;

beforeAll(async () => {
  registry = await Registry.start({ name: "worker-steps-registry" });
  const layout = new OciLayout(tempDir("worker-steps-layout"));
  // Random file contents: the gzip layer stays about 20 MiB, three steps of one part.
  good = buildImage(layout, { tag: "good", seed: "worker-steps-good", layers: 1, filesPerLayer: 5, fileSize: 4 * MiB });
  bad = buildImage(layout, { tag: "bad", seed: "worker-steps-bad", layers: 1, filesPerLayer: 5, fileSize: 4 * MiB });
  await pushImage(layout, "good", `${registry.hostPort}/e2e/steps:good`);
  lazy = buildImage(layout, { tag: "lazy", seed: "worker-steps-lazy", layers: 1, filesPerLayer: 5, fileSize: 4 * MiB });
  await pushImage(layout, "bad", `${registry.hostPort}/e2e/steps:bad`);
  await pushImage(layout, "lazy", `${registry.hostPort}/e2e/steps:lazy`);
  tamper(registry.blobDataPath(bad.layers[0]!.digest));
  worker = await WorkerSkiff.start({ upstream: registry.url, vars: { BLOB_STEP: "8m" } });
}, 180_000);

afterAll(async () => {
  await worker?.stop();
  await registry?.stop();
  await teardown();
});

/** Overwrites the file in place with as many different bytes. */
function tamper(path: string): void {
  const size = statSync(path).size;
  const replacement = new Prng("worker-steps-tampered").bytes(size);
  expect(replacement.equals(readFileSync(path))).toBe(false);
  const fd = openSync(path, "r+");
  try {
    writeSync(fd, replacement, 0, size, 0);
  } finally {
    closeSync(fd);
  }
}

const hexOf = (digest: string) => digest.slice("sha256:".length);

describe("a cold blob fetched in steps by the Worker", () => {
  test("ranged GETs are answered 503 + Retry-After while it is fetched, then from the verified blob, byte-identical to upstream", async () => {
    const layer = good.layers[0]!;
    expect(layer.size).toBeGreaterThan(2 * STEP);
    const steps = Math.ceil(layer.size / STEP);
    const url = `${worker.url}/v2/e2e/steps/blobs/${layer.digest}`;
    const before = registry.accessLog().length;
    const answers: number[] = [];
    let last = await transfer(url, { headers: { Range: "bytes=0-99" } }, 120_000);
    for (let i = 0; i < 20 && last.status === 503; i++) {
      answers.push(last.status);
      expect(last.headers.get("retry-after")).toBe("1");
      expect(JSON.parse(last.body.toString("utf8")).errors[0].code).toBe("UNAVAILABLE");
      last = await transfer(url, { headers: { Range: "bytes=0-99" } }, 120_000);
    }
    expect(last.status, `${last.body.toString("utf8").slice(0, 500)}\n${worker.log().slice(-3000)}`).toBe(206);
    // One request per step: all but the last answered 503.
    expect(answers.length).toBe(steps - 1);

    // The upstream was asked for each range once: 206 answers that add up to the blob, none larger than a step.
    const gets = registry.accessLog().slice(before).filter((l) => l.method === "GET" && l.path.endsWith(`/blobs/${layer.digest}`));
    expect(gets.map((l) => l.status)).toEqual(Array(steps).fill(206));
    expect(gets.every((l) => l.bytes <= STEP)).toBe(true);
    expect(gets.reduce((sum, l) => sum + l.bytes, 0)).toBe(layer.size);

    const whole = await transfer(url, {}, 120_000);
    expect(whole.status).toBe(200);
    expect(whole.body.length).toBe(layer.size);
    expect(sha256(whole.body)).toBe(layer.digest);
    const upstream = await transfer(`${registry.url}/v2/e2e/steps/blobs/${layer.digest}`);
    expect(whole.body.equals(upstream.body)).toBe(true);
    expect(last.body.equals(upstream.body.subarray(0, 100))).toBe(true);
    // Published under its digest; the fetch's checkpoint is gone with it.
    const keys = await worker.bucketKeys();
    expect(keys).toContain(`blobs/sha256/${hexOf(layer.digest).slice(0, 2)}/${hexOf(layer.digest)}`);
    expect(keys.filter((k) => k.endsWith("/checkpoint") && k.includes(hexOf(layer.digest)))).toEqual([]);
  }, 300_000);

  test("a bootstrap request answers 202 while its layer is fetched in steps, then the bootstrap", async () => {
    const layer = lazy.layers[0]!;
    const url = `${worker.url}/v2/e2e/steps/_skiff/bootstrap/${lazy.manifest.digest}`;
    let accepted = 0;
    let last = await transfer(url, {}, 120_000);
    for (let i = 0; i < 20 && last.status === 202; i++) {
      accepted++;
      last = await transfer(url, {}, 120_000);
    }
    expect(last.status, `${last.body.toString("utf8").slice(0, 500)}\n${worker.log().slice(-3000)}`).toBe(200);
    expect(accepted).toBeGreaterThanOrEqual(Math.ceil(layer.size / STEP) - 1);
    const whole = await transfer(`${worker.url}/v2/e2e/steps/blobs/${layer.digest}`, {}, 120_000);
    expect(sha256(whole.body)).toBe(layer.digest);
  }, 300_000);

  test("a tampered upstream blob ends with the digest error, and nothing is published", async () => {
    const layer = bad.layers[0]!;
    const url = `${worker.url}/v2/e2e/steps/blobs/${layer.digest}`;
    let last = await transfer(url, { headers: { Range: "bytes=0-99" } }, 120_000);
    for (let i = 0; i < 20 && last.status === 503; i++) last = await transfer(url, { headers: { Range: "bytes=0-99" } }, 120_000);
    expect(last.status).toBe(502);
    expect(last.body.toString("utf8")).toContain(`do not match digest ${layer.digest}`);
    const keys = await worker.bucketKeys();
    expect(keys.filter((k) => k.includes(hexOf(layer.digest)) && !k.endsWith("/lease"))).toEqual([]);
    // And the next request starts over rather than publishing what it has.
    expect((await transfer(url, { headers: { Range: "bytes=0-99" } }, 120_000)).status).toBe(503);
  }, 300_000);
});
