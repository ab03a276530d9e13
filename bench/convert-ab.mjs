// `skiff convert` of one layer, this build against another, taking turns each round:
//   node bench/convert-ab.mjs --baseline DIR [--layer debian|debian-zstd|big] [--codec none|deflate-raw] [--rounds 5]
// DIR holds the other build (its bin/ and dist/, and node_modules). `debian` is the gzip layer
// bench/debian-layer.mjs caches (bench:convert builds it), `debian-zstd` a `zstd -3` copy of its tar
// made here; `big` is a 1 GiB tar of incompressible files, generated here. Prints wall time, CPU
// seconds (user + system) and peak RSS of each round and their medians, under GNU time; for the
// Debian layer, `gzip -dc | sha256sum` (or `zstd -dc | sha256sum`) of it too. Everything but the cached layer goes under the OS temp directory.
import { execFileSync, spawnSync } from "node:child_process";
import { createCipheriv, createHash } from "node:crypto";
import { closeSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, openSync, rmSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { median } from "./report.mjs";
import { benchCacheDir } from "./lazy-mount.mjs";
import { layoutOfLayerFile } from "./oci-layout.mjs";

const { values } = parseArgs({ options: { baseline: { type: "string" }, layer: { type: "string", default: "debian" }, codec: { type: "string", default: "none" }, rounds: { type: "string", default: "5" } } });
if (!values.baseline) throw new Error("--baseline DIR (another build: bin/, dist/, node_modules) is required");
// Each build's command as npm installs it: bin/skiff, or bin/skiff.js under node in builds before it.
const skiffCommand = (dir) => (existsSync(join(dir, "bin", "skiff")) ? [join(dir, "bin", "skiff")] : ["node", join(dir, "bin", "skiff.js")]);
const builds = [
  { name: "baseline", skiff: skiffCommand(resolve(values.baseline)) },
  { name: "this", skiff: skiffCommand(fileURLToPath(new URL("..", import.meta.url))) },
];
const work = mkdtempSync(join(tmpdir(), "skiff-convert-ab-"));

function bigLayer() {
  const tree = join(work, "big");
  mkdirSync(tree);
  for (let i = 0; i < 4; i++) {
    const key = createHash("sha256").update(`big/${i}`).digest().subarray(0, 16);
    const cipher = createCipheriv("aes-128-ctr", key, Buffer.alloc(16));
    const fd = openSync(join(tree, `part${i}`), "w");
    const zeros = Buffer.alloc(1 << 20);
    for (let n = 0; n < 256; n++) writeSync(fd, cipher.update(zeros));
    closeSync(fd);
  }
  const tar = join(work, "big.tar");
  execFileSync("tar", ["-C", tree, "--sort=name", "--mtime=@0", "-cf", tar, "."]);
  rmSync(tree, { recursive: true });
  return layoutOfLayerFile(join(work, "big-layout"), tar, "application/vnd.oci.image.layer.v1.tar");
}

function debianLayer() {
  const gz = join(benchCacheDir, "debian-python3.tar.gz");
  if (!existsSync(gz)) throw new Error(`${gz} is missing: run \`node bench/convert.mjs --only debian\` once to build it`);
  const copy = join(work, "debian.tar.gz");
  copyFileSync(gz, copy);
  return layoutOfLayerFile(join(work, "debian-layout"), copy, "application/vnd.oci.image.layer.v1.tar+gzip");
}

function debianZstdLayer() {
  const tar = join(benchCacheDir, "debian-python3.tar");
  if (!existsSync(tar)) throw new Error(`${tar} is missing: run \`node bench/convert.mjs --only debian\` once to build it`);
  const zst = join(work, "debian.tar.zst");
  execFileSync("zstd", ["-3", "-q", "-T1", tar, "-o", zst]);
  return layoutOfLayerFile(join(work, "debian-zstd-layout"), zst, "application/vnd.oci.image.layer.v1.tar+zstd");
}

// The layer's blob in its layout; the layout is the directory above blobs/sha256/.
const layerBlob = values.layer === "big" ? bigLayer() : values.layer === "debian-zstd" ? debianZstdLayer() : debianLayer();
const source = dirname(dirname(dirname(layerBlob)));
const out = join(work, "out");
// The bar of issue 22 for a gzip layer, timed in the same rounds.
if (values.layer !== "big") {
  const tool = values.layer === "debian-zstd" ? "zstd" : "gzip";
  builds.push({ name: `${tool} -dc | sha256sum`, command: ["bash", "-c", `${tool} -dc ${layerBlob} | sha256sum >/dev/null`] });
}
const runs = builds.map(() => []);
try {
  for (let round = 0; round < Number(values.rounds); round++) {
    // Who goes first alternates, so a noisy moment does not always land on the same build.
    const order = round % 2 === 0 ? builds.map((_, i) => i) : builds.map((_, i) => i).reverse();
    for (const i of order) {
      rmSync(out, { recursive: true, force: true });
      const command = builds[i].command ?? [...builds[i].skiff, "convert", `${source}:bench`, "--out", out, "--codec", values.codec];
      const r = spawnSync("/usr/bin/time", ["-f", "%e %U %S %M", ...command], { encoding: "utf8" });
      if (r.status !== 0) throw new Error(`${builds[i].name} failed:\n${r.stderr}`);
      const [wall, user, sys, rssKiB] = r.stderr.trim().split("\n").pop().split(" ").map(Number);
      const row = { wall, cpu: user + sys, rssMiB: rssKiB / 1024 };
      runs[i].push(row);
      console.log(`round ${round + 1} ${builds[i].name.padEnd(20)} wall ${wall.toFixed(2)} s  cpu ${row.cpu.toFixed(2)} s  rss ${row.rssMiB.toFixed(0)} MiB`);
    }
  }
} finally {
  rmSync(work, { recursive: true, force: true });
}
for (const [i, b] of builds.entries()) {
  const m = (f) => median(runs[i].map(f));
  console.log(`median ${b.name.padEnd(20)} wall ${m((r) => r.wall).toFixed(2)} s  cpu ${m((r) => r.cpu).toFixed(2)} s  rss ${m((r) => r.rssMiB).toFixed(0)} MiB  (${runs[i].length} rounds)`);
}
