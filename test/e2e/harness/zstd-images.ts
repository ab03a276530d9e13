// Images whose layers are zstd, for checking that every runtime's zstd decoder converts them alike:
// Node's (WebAssembly, or node:zlib's on Node 22.15+), Deno's and workerd's (node:zlib's). Compressed
// by the zstd CLI, the way image builders write them: one layer in two frames, one at level 19,
// and one cut short, which every decoder must refuse.
import { execFileSync } from "node:child_process";
import { Bootstrap } from "../../../src/format/decode.ts";
import { transfer } from "./http.ts";
import { Prng, OciLayout, pushImage, tarArchive, type TarEntry } from "./images.ts";
import { diffIdOf, writeImage, type Layer } from "./rootfs.ts";
import type { Registry } from "./registry.ts";
import { tempDir } from "./workdir.ts";

export const ZSTD_LAYER = "application/vnd.oci.image.layer.v1.tar+zstd";

const zstd = (bytes: Uint8Array, level: number) => execFileSync("zstd", ["-q", "-c", `-${level}`], { input: bytes, maxBuffer: 256 * 2 ** 20 });

function files(prng: Prng, tag: string): TarEntry[] {
  const text = `line of ${tag} text, repeated as configuration and scripts are\n`.repeat(40_000);
  return [
    { name: tag, type: "dir" },
    { name: `${tag}/random`, type: "file", data: prng.bytes(2 * 2 ** 20 + 123) },
    { name: `${tag}/text`, type: "file", data: Buffer.from(text) },
    { name: `${tag}/small`, type: "file", data: Buffer.from("tiny\n") },
  ];
}

/** Pushes `repo:good` (two zstd layers) and `repo:truncated` (a zstd layer cut short) to the registry. */
export async function pushZstdImages(registry: Registry, repo: string): Promise<void> {
  const prng = new Prng(`zstd-${repo}`);
  const twoFrames = tarArchive(files(prng, "a"));
  const half = Math.floor(twoFrames.length / 2);
  const good: Layer[] = [
    { bytes: Buffer.concat([zstd(twoFrames.subarray(0, half), 3), zstd(twoFrames.subarray(half), 3)]), mediaType: ZSTD_LAYER, diffId: diffIdOf(twoFrames) },
    (() => {
      const tar = tarArchive(files(prng, "b"));
      return { bytes: zstd(tar, 19), mediaType: ZSTD_LAYER, diffId: diffIdOf(tar) };
    })(),
  ];
  const goodLayout = new OciLayout(tempDir(`${repo.replaceAll("/", "-")}-zstd`));
  writeImage(goodLayout, "good", good);
  await pushImage(goodLayout, "good", `${registry.hostPort}/${repo}:good`);

  const tar = tarArchive(files(prng, "c"));
  const whole = zstd(tar, 3);
  const cutLayout = new OciLayout(tempDir(`${repo.replaceAll("/", "-")}-zstd-cut`));
  writeImage(cutLayout, "truncated", [{ bytes: whole.subarray(0, whole.length - 100), mediaType: ZSTD_LAYER, diffId: diffIdOf(tar) }]);
  await pushImage(cutLayout, "truncated", `${registry.hostPort}/${repo}:truncated`);
}

interface Proxy {
  url: string;
}

/** What `proxy` answers for the images pushZstdImages pushed: the bootstrap and each layer's data blob, or the refusal. */
export async function zstdConversions(proxy: Proxy, repo: string) {
  const bootstrap = await transfer(`${proxy.url}/v2/${repo}/_skiff/bootstrap/good`, {}, 120_000);
  const params = bootstrap.headers.get("skiff-params");
  const layers = bootstrap.status === 200 ? Bootstrap.decode(bootstrap.body) : null;
  const data: Buffer[] = [];
  for (let i = 0; layers && i < layers.blobCount; i++) {
    const got = await transfer(`${proxy.url}/v2/${repo}/_skiff/layers/${layers.blob(i).layerDigest}/${params}/data`, {}, 120_000);
    data.push(got.status === 200 ? got.body : Buffer.from(`HTTP ${got.status}`));
  }
  const cut = await transfer(`${proxy.url}/v2/${repo}/_skiff/bootstrap/truncated`, {}, 120_000);
  const refusal = { status: cut.status, code: (JSON.parse(cut.body.toString() || "{}") as { errors?: { code: string }[] }).errors?.[0]?.code };
  return { status: bootstrap.status, bootstrap: bootstrap.body, data, refusal, problem: bootstrap.status === 200 ? "" : bootstrap.body.toString().slice(0, 500) };
}
