// The upstream killed mid-transfer, 100 rounds on the Node entry and 20 on Deno's: the real
// Distribution registry behind a 40 Mbit/s link (bench/link-relay.mjs) is `kill -9`ed at a random
// moment while skiff streams a layer blob to a client, then again while skiff fetches the layers of an
// image it converts for a bootstrap. The relay drops its connections at the same moment, so the dead
// process's unsent bytes die with it (Registry.kill). Each round starts a fresh skiff on an empty
// store, so every round is a cold miss. (worker-upstream-kill.test.ts does the same under workerd.)
//
// After each kill, with the registry still down: a cut answer is never a clean one, what skiff stored
// is complete and correct (every blob hashes to its name, every converted file equals a clean
// conversion's, no image bootstrap unless the answer was one, no temporary left), and asking again
// gives an OCI error, not a partial blob from the cache. Once the registry is back, the same requests
// succeed with exactly the right bytes.
import { readFileSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { startLinkRelay, type LinkRelay } from "../../bench/link-relay.mjs";
import { ociErrorCodes, transfer, type Transfer } from "./harness/http.ts";
import { buildImage, OciLayout, Prng, pushImage, sha256, type ImageInfo } from "./harness/images.ts";
import { sleep } from "./harness/processes.ts";
import { Registry } from "./harness/registry.ts";
import { Skiff } from "./harness/skiff.ts";
import { convertedFiles, storeProblems } from "./harness/store-contents.ts";
import { teardown } from "./harness/teardown.ts";
import { tempDir } from "./harness/workdir.ts";

// The Node entry gets the hundred rounds; the Deno entry, which serves the same app, a smaller share.
const RUNS = [
  { runtime: "node", rounds: 100 },
  { runtime: "deno", rounds: 20 },
] as const;
const RATE = 40e6; // 5 MB/s: a 1.5 MiB layer takes about 0.3 s, so a random kill lands mid-transfer
const PULL_REPO = "e2e/kill-pull";
const CONVERT_REPO = "e2e/kill-convert";

let registry: Registry;
let relay: LinkRelay;
let pullImage: ImageInfo;
let blob: { digest: string; bytes: Buffer };
/** A clean conversion: the image bootstrap, and every file under the store's converted/ by path. */
let reference: { bootstrap: Buffer; converted: Map<string, string> };

const upstreamUrl = () => `http://127.0.0.1:${relay.port}`;
const blobUrl = (s: Skiff) => `${s.url}/v2/${PULL_REPO}/blobs/${blob.digest}`;
const bootstrapUrl = (s: Skiff) => `${s.url}/v2/${CONVERT_REPO}/_skiff/bootstrap/v1`;

/** A 5xx OCI error that puts the fault on the upstream (UNAVAILABLE), never "internal error". */
function expectOciError(t: Transfer, what: string): void {
  expect(t.status, `${what}: status ${t.status}, body ${t.body.toString("utf8", 0, 300)}`).toBeGreaterThanOrEqual(500);
  expect(ociErrorCodes(t), what).toEqual(["UNAVAILABLE"]);
}

/** What skiff left in its store is complete and correct; an image bootstrap only if one was served. */
async function expectNothingPartial(s: Skiff, imageBootstrapServed: boolean, what: string): Promise<void> {
  expect(await storeProblems(s.dataDir, reference.converted), what).toEqual([]);
  const images = [...convertedFiles(s.dataDir).keys()].filter((p) => p.startsWith("images/"));
  if (!imageBootstrapServed) expect(images, `${what}: an image bootstrap was stored though none was served`).toEqual([]);
}

beforeAll(async () => {
  registry = await Registry.start({ name: "kill-registry" });
  const layout = new OciLayout(tempDir("kill-layout"));
  pullImage = buildImage(layout, { tag: "v1", seed: "kill-pull", layers: 1, filesPerLayer: 3, fileSize: 512 * 1024 });
  buildImage(layout, { tag: "v2", seed: "kill-convert", layers: 3, filesPerLayer: 2, fileSize: 256 * 1024 });
  await pushImage(layout, "v1", `${registry.hostPort}/${PULL_REPO}:v1`);
  await pushImage(layout, "v2", `${registry.hostPort}/${CONVERT_REPO}:v1`);
  const layer = pullImage.layers[0]!;
  blob = { digest: layer.digest, bytes: readFileSync(registry.blobDataPath(layer.digest)) };
  expect(sha256(blob.bytes)).toBe(layer.digest);

  // The reference: a skiff that never saw a fault, straight on the registry.
  const clean = await Skiff.start({ upstream: registry.url });
  try {
    const t = await transfer(bootstrapUrl(clean));
    expect(t.status).toBe(200);
    expect(t.complete).toBe(true);
    reference = { bootstrap: t.body, converted: convertedFiles(clean.dataDir) };
  } finally {
    await clean.stop();
  }
  expect([...reference.converted.keys()].filter((p) => p.startsWith("images/")).length).toBe(1);
  relay = await startLinkRelay({ target: { host: "127.0.0.1", port: registry.port }, rateBitsPerSecond: RATE });
}, 120_000);

afterAll(async () => {
  await relay?.close();
  await registry?.stop();
  await teardown();
});

describe.each(RUNS)("the upstream killed mid-transfer ($runtime)", ({ runtime, rounds: ROUNDS }) => {
  test(`${ROUNDS} rounds: kill -9 mid-blob and mid-conversion, then restart; nothing partial is kept or served, and the next request succeeds`, async () => {
    const prng = new Prng(`upstream-kill-${runtime}`);
    const outcomes = { blobCut: 0, blobWhole: 0, blobRefused: 0, convertCut: 0, convertWhole: 0, convertBeforeLayers: 0 };
    for (let round = 0; round < ROUNDS; round++) {
      const s = await Skiff.start({ upstream: upstreamUrl(), runtime });
      try {
        // 1. A client pulls the layer blob; the registry dies somewhere in the first 0.4 s.
        const what = `round ${round}, blob`;
        const pulling = transfer(blobUrl(s), {}, 30_000);
        await sleep(prng.int(400));
        await registry.kill(relay);
        const pulled = await pulling;
        const whole = pulled.status === 200 && pulled.complete;
        if (whole) {
          expect(sha256(pulled.body), what).toBe(blob.digest);
          outcomes.blobWhole++;
        } else if (pulled.status === 200) {
          expect(pulled.body.length, `${what}: a cut answer ended cleanly`).toBeLessThan(blob.bytes.length);
          expect(pulled.body.equals(blob.bytes.subarray(0, pulled.body.length)), `${what}: the bytes before the cut`).toBe(true);
          outcomes.blobCut++;
        } else {
          expectOciError(pulled, what); // the kill came before skiff had an answer to start
          outcomes.blobRefused++;
        }
        await expectNothingPartial(s, false, what);
        const again = await transfer(blobUrl(s), {}, 30_000);
        if (whole) {
          expect(again.status, `${what}: from the cache`).toBe(200);
          expect(sha256(again.body), `${what}: from the cache`).toBe(blob.digest);
        } else {
          expectOciError(again, `${what}, asked again with the registry down`);
        }
        await registry.start();
        const after = await transfer(blobUrl(s), {}, 30_000);
        expect(after.status, `${what}, after the restart`).toBe(200);
        expect(after.complete && sha256(after.body) === blob.digest, `${what}, after the restart: exact bytes`).toBe(true);

        // 2. A client asks for the bootstrap of a three-layer image that skiff has never seen; the
        // registry dies while skiff fetches its manifests and layers (about 0.35 s in all).
        const whatConvert = `round ${round}, conversion`;
        const before = await s.metric("skiff_upstream_bytes_total");
        const converting = transfer(bootstrapUrl(s), {}, 30_000);
        await sleep(prng.int(450));
        await registry.kill(relay);
        const converted = await converting;
        const served = converted.status === 200;
        if (served) {
          expect(converted.complete && converted.body.equals(reference.bootstrap), `${whatConvert}: the bootstrap`).toBe(true);
          outcomes.convertWhole++;
        } else {
          expectOciError(converted, whatConvert);
          // Layer bytes arrived before the kill: the conversion was under way, not refused at the manifest.
          if ((await s.metric("skiff_upstream_bytes_total")) > before) outcomes.convertCut++;
          else outcomes.convertBeforeLayers++;
        }
        await expectNothingPartial(s, served, whatConvert);
        const convertAgain = await transfer(bootstrapUrl(s), {}, 30_000);
        if (served) expect(convertAgain.body.equals(reference.bootstrap), `${whatConvert}: from the store`).toBe(true);
        else expectOciError(convertAgain, `${whatConvert}, asked again with the registry down`);
        await registry.start();
        const convertAfter = await transfer(bootstrapUrl(s), {}, 30_000);
        expect(convertAfter.status, `${whatConvert}, after the restart: ${convertAfter.body.toString("utf8", 0, 300)}`).toBe(200);
        expect(convertAfter.body.equals(reference.bootstrap), `${whatConvert}, after the restart: the same bootstrap`).toBe(true);
        await expectNothingPartial(s, true, `${whatConvert}, after the restart`);
        expect(s.running, `round ${round}: skiff still running`).toBe(true);
      } finally {
        await s.stop();
        await registry.start();
      }
    }
    console.log(`upstream kills (${runtime}): ${JSON.stringify(outcomes)}`);
    // The kills must mostly land mid-transfer, or this test proves little.
    expect(outcomes.blobCut, JSON.stringify(outcomes)).toBeGreaterThan(ROUNDS / 2);
    expect(outcomes.convertCut, JSON.stringify(outcomes)).toBeGreaterThan(ROUNDS / 2);
  }, 900_000);
});
