// An upstream served over https with a certificate from a private CA: skiff trusts it only through
// the upstream's `ca` bundle, and refuses it (no content, a clear error) without one.
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { Registry } from "./harness/registry.ts";
import { Skiff } from "./harness/skiff.ts";
import { OciLayout, buildImage, pushImage, MT, type ImageInfo } from "./harness/images.ts";
import { skopeoCopy } from "./harness/skopeo.ts";
import { compareTrees } from "./harness/files.ts";
import { transfer } from "./harness/http.ts";
import { makeTls } from "./harness/tls.ts";
import { tempDir } from "./harness/workdir.ts";
import { teardown } from "./harness/teardown.ts";

let registry: Registry;
let image: ImageInfo;
const skiffs: Skiff[] = [];

beforeAll(async () => {
  const tls = await makeTls("upstream-ca");
  registry = await Registry.start({ name: "tls-registry", tls });
  const layout = new OciLayout(tempDir("tls-layout"));
  image = buildImage(layout, { tag: "v1", seed: "upstream-ca", layers: 2, filesPerLayer: 2 });
  await pushImage(layout, "v1", `${registry.hostPort}/secure/app:v1`);
}, 120_000);

afterAll(async () => {
  for (const s of skiffs) await s.stop();
  await registry?.stop();
  await teardown();
});

async function start(extraArgs: string[]): Promise<Skiff> {
  const s = await Skiff.start({ upstream: registry.url, extraArgs });
  skiffs.push(s);
  return s;
}

describe("an upstream with a private CA", () => {
  test("with --upstream-ca, skopeo through skiff gets the image the registry holds", async () => {
    const skiff = await start(["--upstream-ca", registry.tls!.ca]);
    const direct = tempDir("tls-direct");
    await skopeoCopy(`docker://${registry.hostPort}/secure/app:v1`, `dir:${direct}`);
    const via = tempDir("tls-via");
    await skopeoCopy(`docker://${skiff.hostPort}/secure/app:v1`, `dir:${via}`);
    const diff = compareTrees(direct, via);
    expect(diff.different).toEqual([]);
    expect(diff.onlyInA).toEqual([]);
    expect(diff.same.length).toBe(image.layers.length + 3);
  }, 120_000);

  test("the same through a config file's `ca`", async () => {
    const config = join(tempDir("tls-config"), "skiff.json");
    writeFileSync(config, JSON.stringify({ upstreams: { secure: { url: registry.url, ca: registry.tls!.ca } } }));
    const s = await Skiff.start({ extraArgs: ["--config", config] });
    skiffs.push(s);
    const res = await transfer(`${s.url}/v2/secure/secure/app/manifests/v1`, { headers: { accept: MT.manifest } });
    expect(res.status).toBe(200);
    expect(res.body.equals(image.manifestBytes)).toBe(true);
  }, 60_000);

  test("without the CA, requests fail with UNAVAILABLE naming the certificate problem, and nothing is cached", async () => {
    const skiff = await start([]);
    const res = await transfer(`${skiff.url}/v2/secure/app/manifests/v1`, { headers: { accept: MT.manifest } });
    expect(res.status).toBe(502);
    const body = JSON.parse(res.body.toString("utf8")) as { errors: { code: string; message: string }[] };
    expect(body.errors[0]!.code).toBe("UNAVAILABLE");
    expect(body.errors[0]!.message).toMatch(/certificate|CERT|self.signed/i);
  }, 60_000);
});
