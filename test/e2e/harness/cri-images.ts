// The images a CRI test runs, built by the test itself and pushed to its local registry: the pods'
// sandbox image (pause.c, compiled with `gcc -static`: one file, no libraries) and a small Debian
// with python3 (debootstrap, built once into the test cache and reused by later runs).
import { copyFileSync, existsSync, readFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";
import { debianLayer } from "../../../bench/debian-layer.mjs";
import { MT, OciLayout, sha256, tarArchive, writeRunnableImage, type ImageInfo } from "./images.ts";
import { runOk } from "./processes.ts";
import { tempDir } from "./workdir.ts";

const PAUSE_SOURCE = fileURLToPath(new URL("./pause.c", import.meta.url));

/**
 * Where built images are kept between runs: $SKIFF_TEST_CACHE, else $XDG_CACHE_HOME/skiff-test
 * (~/.cache/skiff-test). Delete it to rebuild.
 */
export function testCacheDir(): string {
  return process.env.SKIFF_TEST_CACHE ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), ".cache"), "skiff-test");
}

/** The sandbox image: `/pause` (statically linked) as its entrypoint, tagged `tag` in `layout`. */
export async function buildPauseImage(layout: OciLayout, tag: string): Promise<ImageInfo> {
  const dir = tempDir("pause-build");
  const bin = join(dir, "pause");
  await runOk("gcc", ["-static", "-Os", "-s", "-o", bin, PAUSE_SOURCE], { timeoutMs: 120_000 }).catch((err: Error) => {
    throw new Error(`cannot build the sandbox image (gcc and libc6-dev are needed): ${err.message}`);
  });
  const tar = tarArchive([{ name: "pause", type: "file", data: readFileSync(bin), mode: 0o755 }]);
  const layer = { ...layout.writeBlob(gzipSync(tar, { level: 6 }), MT.layerGzip), diffId: sha256(tar) };
  return writeRunnableImage(layout, { tag, layers: [layer], run: { Entrypoint: ["/pause"] } });
}

export interface DebianImage extends ImageInfo {
  /** Seconds debootstrap and packing took, or 0 when the cached layer was used. */
  buildSeconds: number;
}

/**
 * Debian stable (debootstrap minbase) with python3 as one gzip layer, apt's package lists and
 * caches left out; `python3` as its command. Built once into testCacheDir() (about a minute and a
 * half, from deb.debian.org) and reused; tagged `tag` in `layout`.
 */
export async function buildDebianPythonImage(layout: OciLayout, tag: string): Promise<DebianImage> {
  const name = "debian-stable-python3";
  const cached = existsSync(join(testCacheDir(), `${name}.tar.gz`));
  const started = performance.now();
  const built = await debianLayer({
    cacheDir: testCacheDir(),
    name,
    packages: ["python3"],
    prune: ["var/lib/apt/lists", "var/cache/apt"],
    workDir: tempDir("debian-build"),
    run: (cmd, args, { timeoutMs }) => runOk(cmd, args, { timeoutMs }),
    log: (m) => console.error(m),
    timeoutMs: 600_000,
  });
  const buildSeconds = cached ? 0 : (performance.now() - started) / 1000;
  const blob = layout.blobPath(built.digest);
  if (!existsSync(blob)) copyFileSync(built.gzFile, blob);
  const layer = { mediaType: MT.layerGzip, digest: built.digest, size: built.gzBytes, diffId: built.diffId };
  const image = writeRunnableImage(layout, { tag, layers: [layer], run: { Cmd: ["python3"] } });
  return { ...image, buildSeconds };
}
