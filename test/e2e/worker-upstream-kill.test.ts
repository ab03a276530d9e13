// The upstream killed mid-transfer under the Worker entry (workerd, local R2), 20 rounds: as
// upstream-kill.test.ts does for Node, the real registry behind an 80 Mbit/s link is `kill -9`ed (and
// the link cut) while the Worker streams a 10 MiB blob into an R2 multipart upload, then while it
// fetches the layers of an image it converts in steps. One Worker serves every round, so each round
// has images of its own that nothing has cached yet.
//
// With the registry down a cut answer must be followed by an OCI error, never by a partial object
// from R2; with the registry back the blob is exact and the bootstrap is the one the Node proxy makes.
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { startLinkRelay, type LinkRelay } from "../../bench/link-relay.mjs";
import { ociErrorCodes, transfer, type Transfer } from "./harness/http.ts";
import { buildImage, OciLayout, Prng, pushImage, sha256, type ImageInfo } from "./harness/images.ts";
import { sleep } from "./harness/processes.ts";
import { Registry } from "./harness/registry.ts";
import { parseMetrics, Skiff, sumMetrics } from "./harness/skiff.ts";
import { teardown } from "./harness/teardown.ts";
import { WorkerSkiff } from "./harness/worker.ts";
import { tempDir } from "./harness/workdir.ts";

const ROUNDS = 20;
const MiB = 2 ** 20;

let registry: Registry;
let relay: LinkRelay;
let worker: WorkerSkiff;
const rounds: { blob: ImageInfo; convert: ImageInfo; bootstrap: Buffer }[] = [];

const blobUrl = (i: number) => `${worker.url}/v2/e2e/wk-pull-${i}/blobs/${rounds[i]!.blob.layers[0]!.digest}`;
const bootstrapPath = (i: number) => `/v2/e2e/wk-convert-${i}/_skiff/bootstrap/v1`;

function expectUpstreamError(t: Transfer, what: string): void {
  expect(t.status, `${what}: status ${t.status}, body ${t.body.toString("utf8", 0, 300)}`).toBeGreaterThanOrEqual(500);
  expect(ociErrorCodes(t), what).toEqual(["UNAVAILABLE"]);
}

/** The bootstrap once the conversion is done: a Worker answers 202 while its steps go on. */
async function bootstrapOf(i: number): Promise<Transfer> {
  let t = await transfer(`${worker.url}${bootstrapPath(i)}`, {}, 60_000);
  for (let n = 0; n < 200 && t.status === 202; n++) t = await transfer(`${worker.url}${bootstrapPath(i)}`, {}, 60_000);
  return t;
}

async function upstreamBytes(): Promise<number> {
  return sumMetrics(parseMetrics(await worker.metricsText())).get("skiff_upstream_bytes_total") ?? 0;
}

beforeAll(async () => {
  registry = await Registry.start({ name: "worker-kill-registry" });
  const layout = new OciLayout(tempDir("worker-kill-layout"));
  for (let i = 0; i < ROUNDS; i++) {
    // A blob over one R2 part (8 MiB), so the cut lands in a multipart upload.
    const blob = buildImage(layout, { tag: `pull-${i}`, seed: `worker-kill-pull-${i}`, layers: 1, filesPerLayer: 5, fileSize: 2 * MiB });
    const convert = buildImage(layout, { tag: `convert-${i}`, seed: `worker-kill-convert-${i}`, layers: 3, filesPerLayer: 2, fileSize: 256 * 1024 });
    await pushImage(layout, `pull-${i}`, `${registry.hostPort}/e2e/wk-pull-${i}:v1`);
    await pushImage(layout, `convert-${i}`, `${registry.hostPort}/e2e/wk-convert-${i}:v1`);
    rounds.push({ blob, convert, bootstrap: Buffer.alloc(0) });
  }
  // The references: the Node proxy's conversions, straight from the registry.
  const node = await Skiff.start({ upstream: registry.url });
  try {
    for (let i = 0; i < ROUNDS; i++) {
      const t = await transfer(`${node.url}${bootstrapPath(i)}`);
      expect(t.status).toBe(200);
      rounds[i]!.bootstrap = t.body;
    }
  } finally {
    await node.stop();
  }
  relay = await startLinkRelay({ target: { host: "127.0.0.1", port: registry.port }, rateBitsPerSecond: 80e6 });
  worker = await WorkerSkiff.start({ upstream: `http://127.0.0.1:${relay.port}` });
}, 300_000);

afterAll(async () => {
  await worker?.stop();
  await relay?.close();
  await registry?.stop();
  await teardown();
});

describe("the upstream killed under the Worker", () => {
  test(`${ROUNDS} rounds: kill -9 mid-blob and mid-conversion; nothing partial comes out of R2, and the next request succeeds`, async () => {
    const prng = new Prng("worker-upstream-kill");
    const outcomes = { blobCut: 0, blobWhole: 0, blobRefused: 0, convertCut: 0, convertWhole: 0, convertBeforeLayers: 0 };
    for (let i = 0; i < ROUNDS; i++) {
      const { blob, bootstrap } = rounds[i]!;
      const layer = blob.layers[0]!;
      try {
        // 1. The blob: 10 MiB, about 1 s over the link.
        const what = `round ${i}, blob`;
        const pulling = transfer(blobUrl(i), {}, 60_000);
        await sleep(prng.int(1200));
        await registry.kill(relay);
        const pulled = await pulling;
        const whole = pulled.status === 200 && pulled.complete;
        if (whole) {
          expect(sha256(pulled.body), what).toBe(layer.digest);
          outcomes.blobWhole++;
        } else if (pulled.status === 200) {
          expect(pulled.body.length, `${what}: a cut answer ended cleanly`).toBeLessThan(layer.size);
          outcomes.blobCut++;
        } else {
          expectUpstreamError(pulled, what);
          outcomes.blobRefused++;
        }
        const again = await transfer(blobUrl(i), {}, 60_000);
        if (whole) expect(sha256(again.body), `${what}: from R2`).toBe(layer.digest);
        else expectUpstreamError(again, `${what}, asked again with the registry down`);
        await registry.start();
        const after = await transfer(blobUrl(i), {}, 60_000);
        expect(after.status === 200 && after.complete && sha256(after.body) === layer.digest, `${what}, after the restart: exact bytes`).toBe(true);

        // 2. The conversion of a three-layer image (about 0.15 s of layers over the link).
        const whatConvert = `round ${i}, conversion`;
        const before = await upstreamBytes();
        const converting = transfer(`${worker.url}${bootstrapPath(i)}`, {}, 60_000);
        await sleep(prng.int(300));
        await registry.kill(relay);
        const converted = await converting;
        if (converted.status === 200) {
          expect(converted.body.equals(bootstrap), `${whatConvert}: the bootstrap`).toBe(true);
          outcomes.convertWhole++;
        } else {
          expectUpstreamError(converted, whatConvert);
          if ((await upstreamBytes()) > before) outcomes.convertCut++;
          else outcomes.convertBeforeLayers++;
          expectUpstreamError(await transfer(`${worker.url}${bootstrapPath(i)}`, {}, 60_000), `${whatConvert}, asked again with the registry down`);
        }
        await registry.start();
        const convertAfter = await bootstrapOf(i);
        expect(convertAfter.status, `${whatConvert}, after the restart: ${convertAfter.body.toString("utf8", 0, 300)}`).toBe(200);
        expect(convertAfter.body.equals(bootstrap), `${whatConvert}, after the restart: the Node proxy's bootstrap`).toBe(true);
      } finally {
        await registry.start();
      }
    }
    console.log(`worker upstream kills: ${JSON.stringify(outcomes)}`);
    expect(outcomes.blobCut, JSON.stringify(outcomes)).toBeGreaterThan(ROUNDS / 2);
    expect(outcomes.convertCut, JSON.stringify(outcomes)).toBeGreaterThan(ROUNDS / 3);
  }, 900_000);
});
