// Conversion benchmarks: `npm run bench:convert [-- --write] [-- --only debian]`.
//  0. A real root filesystem: Debian with python3 and numpy (bench/debian-layer.mjs, built once from
//     Debian's packages and cached; needs root and debootstrap), its gzip layer and a zstd copy of the
//     same tar: `skiff convert` of each against `gzip -dc | sha256sum` and `zstd -dc | sha256sum`.
//  1. A ≥ 100 MB gzip layer: `skiff convert` (codec none and deflate-raw) against
//     `gzip -dc | sha256sum` on the same file, wall time and peak RSS, median of 3 runs.
//  2. Peak RSS converting a 1 GiB layer.
//  3. A layer of 100,000 small files: its conversion time and peak RSS, bootstrap size against the
//     raw bytes, and decode time.
// Everything is generated here, deterministically, under the OS temp directory and removed after.
import { execFileSync, spawnSync } from "node:child_process";
import { createCipheriv, createHash } from "node:crypto";
import { closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, statSync, writeFileSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { machine, median, replaceSection } from "./report.mjs";
import { benchCacheDir, PYTHON_PACKAGES } from "./lazy-mount.mjs";
import { debianLayer } from "./debian-layer.mjs";
import { layoutOfLayerFile } from "./oci-layout.mjs";

const root = fileURLToPath(new URL("..", import.meta.url));
// The command npm installs (bin/skiff), which starts Node once with convert's settings.
const skiff = join(root, "bin", "skiff");
const work = mkdtempSync(join(tmpdir(), "skiff-bench-convert-"));
const RUNS = 3;
/** The Debian layer's rows, whose ratios are goals: more rounds, since this machine's speed drifts. */
const DEBIAN_ROUNDS = 5;

/** Deterministic incompressible bytes: an AES-128-CTR keystream keyed by the seed. */
function* pseudoRandom(seed, total) {
  const key = createHash("sha256").update(String(seed)).digest().subarray(0, 16);
  const cipher = createCipheriv("aes-128-ctr", key, Buffer.alloc(16));
  const zeros = Buffer.alloc(1 << 16);
  for (let left = total; left > 0; left -= zeros.length) {
    const block = cipher.update(zeros);
    yield left >= block.length ? block : block.subarray(0, left);
  }
}

/** Text-like, compressible bytes (repeated words with varying numbers). */
function textLike(seed, size) {
  const words = ["lorem", "ipsum", "def", "return", "import", "class", "self", "value", "{", "}", "\n", "    "];
  const parts = [];
  let n = 0;
  let i = seed;
  while (n < size) {
    const w = `${words[i % words.length]}${i % 7 === 0 ? i % 1000 : ""} `;
    parts.push(w);
    n += w.length;
    i = (i * 1103515245 + 12345) % 2147483648;
  }
  return Buffer.from(parts.join("").slice(0, size));
}

/** A directory of mixed files: about half random (incompressible), half text. */
function makeTree(dir, totalBytes, seed) {
  mkdirSync(dir, { recursive: true });
  let written = 0;
  let k = 0;
  while (written < totalBytes) {
    const size = 1024 + ((k * 7919 + seed) % (4 << 20));
    const sub = join(dir, `d${k % 37}`);
    mkdirSync(sub, { recursive: true });
    const fd = openSync(join(sub, `f${k}`), "w");
    if (k % 2 === 0) for (const b of pseudoRandom(`${seed}/${k}`, size)) writeSync(fd, b);
    else writeSync(fd, textLike(k + seed, size));
    closeSync(fd);
    written += size;
    k++;
  }
  return { files: k, bytes: written };
}

function sha256File(path) {
  return createHash("sha256").update(readFileSync(path)).digest("hex");
}

/** Runs a shell command under GNU time: wall seconds and peak RSS in KiB. */
function timed(command) {
  const r = spawnSync("/usr/bin/time", ["-f", "%e %M", "bash", "-c", `${command} >/dev/null`], { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`failed: ${command}\n${r.stderr}`);
  const [wall, rss] = r.stderr.trim().split("\n").pop().split(" ").map(Number);
  return { wall, rssKiB: rss };
}

function measure(command, before = () => {}) {
  const runs = [];
  for (let i = 0; i < RUNS; i++) {
    before();
    runs.push(timed(command));
  }
  return { wall: median(runs.map((r) => r.wall)), rssKiB: median(runs.map((r) => r.rssKiB)) };
}

/** Ends the run after the sections `--only` asked for. */
class Done {}

const mib = (kib) => (kib / 1024).toFixed(0);
const out = [];
const only = process.argv.includes("--only") ? process.argv[process.argv.indexOf("--only") + 1] : null;

/** Section 0: the Debian python3 layer, gzip and zstd, each beside its CLI decoder. */
async function realisticLayer() {
  const layer = await debianLayer({ cacheDir: benchCacheDir, name: "debian-python3", packages: PYTHON_PACKAGES, workDir: work });
  const zst = join(work, "debian.tar.zst");
  execFileSync("zstd", ["-q", "-3", "-f", "-o", zst, layer.tarFile]);
  const gzLayout = join(work, "debian-gz");
  const zstLayout = join(work, "debian-zst");
  const gzCopy = join(work, "debian.tar.gz");
  execFileSync("cp", [layer.gzFile, gzCopy]);
  const gzBlob = layoutOfLayerFile(gzLayout, gzCopy, "application/vnd.oci.image.layer.v1.tar+gzip");
  const zstBlob = layoutOfLayerFile(zstLayout, zst, "application/vnd.oci.image.layer.v1.tar+zstd");
  const outDir = join(work, "out-debian");
  const fresh = () => rmSync(outDir, { recursive: true, force: true });
  // `skiff convert` of the gzip or zstd layer by the Node at `node`, named `who`, beside its CLI row.
  const convertRow = (node, who, format) => {
    const [layout, ref, goal] = format === "gzip" ? [gzLayout, 0, "≤ 1.3×"] : [zstLayout, 2, "≤ 1.5×"];
    return { name: `\`skiff convert\` of the ${format} layer, ${who}`, command: `SKIFF_NODE=${node} ${skiff} convert ${layout}:bench --out ${outDir}`, ref, before: fresh, goal };
  };
  // The rows take turns in each round, so a noisy moment does not land on one of them only.
  const rows = [
    { name: "`gzip -dc layer.tar.gz \\| sha256sum`", command: `gzip -dc ${gzBlob} | sha256sum`, ref: 0 },
    convertRow(process.execPath, `Node ${process.version}`, "gzip"),
    { name: "`zstd -dc layer.tar.zst \\| sha256sum`", command: `zstd -dc ${zstBlob} | sha256sum`, ref: 2 },
    convertRow(process.execPath, `Node ${process.version}`, "zstd"),
  ];
  // The same conversions on the container image's Node, which has node:zlib's zstd (off the
  // converting thread), where this machine's Node may decode zstd in WebAssembly on it.
  const imageNode = spawnSync(join(root, "deploy", "image", "node-binary.sh"), { encoding: "utf8" });
  if (imageNode.status === 0) {
    const node = imageNode.stdout.trim();
    const who = `the image's Node ${execFileSync(node, ["--version"], { encoding: "utf8" }).trim()}`;
    rows.push(convertRow(node, who, "gzip"), convertRow(node, who, "zstd"));
  } else {
    console.error(`bench:convert: the image's Node could not be had, its rows are left out: ${imageNode.stderr.trim()}`);
  }
  const runs = rows.map(() => []);
  for (let round = 0; round < DEBIAN_ROUNDS; round++) {
    rows.forEach((row, i) => {
      row.before?.();
      runs[i].push(timed(row.command));
    });
  }
  // A row's ratio in each round is to its CLI row of the same round, a few seconds apart.
  const results = runs.map((r, i) => {
    const ratios = r.map((x, round) => x.wall / runs[rows[i].ref][round].wall).sort((a, b) => a - b);
    return { wall: median(r.map((x) => x.wall)), rssKiB: median(r.map((x) => x.rssKiB)), ratio: median(ratios), low: ratios[0], high: ratios.at(-1) };
  });
  fresh();
  return [
    `### A real root filesystem: Debian ${PYTHON_PACKAGES.join(" + ")} (${(layer.gzBytes / 1e6).toFixed(0)} MB gzip, ${(statSync(zstBlob).size / 1e6).toFixed(0)} MB zstd, ${(layer.tarBytes / 1e6).toFixed(0)} MB tar)`,
    "",
    "The layer bench:cold-start runs (bench/debian-layer.mjs: debootstrap minbase plus the packages, packed with `tar --sort=name`, `gzip -6`), and a `zstd -3` copy of the same tar. Each row is one command over the layer's file, wall time and peak RSS under GNU time, median of " + DEBIAN_ROUNDS + " rounds in which the rows take turns; `skiff convert` writes a new store each time, default codec (none) and chunk size, run by the Node each row names: this machine's, and the container image's (deploy/image/node-binary.sh), whose node:zlib decodes zstd. The CLI rows are the bar: decompression and one sha256 of the content, in two processes. A row's ratio is the median of its rounds' ratios to its CLI row in the same round, with the lowest and highest.",
    "",
    "| command | wall time | peak RSS | ratio to its CLI row (lowest–highest) | goal |",
    "|---|---|---|---|---|",
    ...rows.map((row, i) => {
      const r = results[i];
      const ratio = row.ref === i ? "1.00×" : `${r.ratio.toFixed(2)}× (${r.low.toFixed(2)}–${r.high.toFixed(2)})`;
      return `| ${row.name} | ${r.wall.toFixed(2)} s | ${mib(r.rssKiB)} MiB | ${ratio} | ${row.goal ?? ""} |`;
    }),
    "",
  ];
}

try {
  if (!only || only === "debian") {
    if (process.getuid?.() === 0 && spawnSync("which", ["debootstrap"]).status === 0) out.push(...(await realisticLayer()));
    else out.push("### A real root filesystem", "", "Not measured: building the Debian layer needs root and debootstrap.", "");
  }
  if (only === "debian") throw new Done();
  // 1. A ≥ 100 MB gzip layer.
  const tree = join(work, "tree");
  const t = makeTree(tree, 200 << 20, 1);
  const gz = join(work, "layer.tar.gz");
  execFileSync("bash", ["-c", `tar -C ${tree} --sort=name --mtime=@0 --owner=0 --group=0 -cf - . | gzip -6 > ${gz}`]);
  rmSync(tree, { recursive: true });
  const layout = join(work, "layout");
  const layer = layoutOfLayerFile(layout, gz, "application/vnd.oci.image.layer.v1.tar+gzip");
  const size = statSync(layer).size;
  const outDir = join(work, "out");
  const fresh = () => rmSync(outDir, { recursive: true, force: true });
  const reference = measure(`gzip -dc ${layer} | sha256sum`);
  const none = measure(`${skiff} convert ${layout}:bench --out ${outDir} --codec none`, fresh);
  const deflate = measure(`${skiff} convert ${layout}:bench --out ${outDir} --codec deflate-raw`, fresh);
  out.push(
    `### Converting a ${(size / 1e6).toFixed(0)} MB gzip layer (${t.files} files, ${(t.bytes / 1e6).toFixed(0)} MB of content, half incompressible)`,
    "",
    "| command | wall time (median of 3) | peak RSS | ratio to gzip -dc \\| sha256sum |",
    "|---|---|---|---|",
    `| \`gzip -dc layer \\| sha256sum\` | ${reference.wall.toFixed(2)} s | ${mib(reference.rssKiB)} MiB | 1.00× |`,
    `| \`skiff convert --codec none\` | ${none.wall.toFixed(2)} s | ${mib(none.rssKiB)} MiB | ${(none.wall / reference.wall).toFixed(2)}× |`,
    `| \`skiff convert --codec deflate-raw\` | ${deflate.wall.toFixed(2)} s | ${mib(deflate.rssKiB)} MiB | ${(deflate.wall / reference.wall).toFixed(2)}× |`,
    "",
    "Goal: `--codec none` within 1.5× of `gzip -dc | sha256sum`. The reference runs in two processes (one core each); coreutils' sha256sum does not use the CPU's SHA extensions, node:crypto does. `deflate-raw` is bounded by fflate's deflate (see the codec section).",
    "",
  );
  rmSync(layout, { recursive: true });
  fresh();

  // 2. Peak RSS on a 1 GiB layer.
  const bigTree = join(work, "big");
  mkdirSync(bigTree);
  for (let i = 0; i < 4; i++) {
    const fd = openSync(join(bigTree, `part${i}`), "w");
    for (const b of pseudoRandom(`big/${i}`, 256 << 20)) writeSync(fd, b);
    closeSync(fd);
  }
  const bigTar = join(work, "big.tar");
  execFileSync("tar", ["-C", bigTree, "--sort=name", "--mtime=@0", "-cf", bigTar, "."]);
  rmSync(bigTree, { recursive: true });
  const bigLayout = join(work, "big-layout");
  const bigLayer = layoutOfLayerFile(bigLayout, bigTar, "application/vnd.oci.image.layer.v1.tar");
  const big = measure(`${skiff} convert ${bigLayout}:bench --out ${outDir}`, fresh);
  out.push(
    `### Peak RSS converting a ${(statSync(bigLayer).size / 2 ** 30).toFixed(2)} GiB layer`,
    "",
    "| command | wall time | peak RSS |",
    "|---|---|---|",
    `| \`skiff convert --codec none\` | ${big.wall.toFixed(2)} s | ${mib(big.rssKiB)} MiB |`,
    "",
    "Goal: at most 100 MiB.",
    "",
  );
  rmSync(bigLayout, { recursive: true });
  fresh();

  // 3. 100,000 small files.
  const smallTree = join(work, "small");
  let raw = 0;
  for (let k = 0; k < 100_000; k++) {
    const dir = join(smallTree, `pkg${k % 1000}`, `mod${k % 7}`);
    if (k < 7000) mkdirSync(dir, { recursive: true });
    const size = 1024 + ((k * 2654435761) % (19 * 1024));
    writeFileSync(join(dir, `file_${k}.py`), textLike(k, size));
    raw += size;
  }
  const smallTar = join(work, "small.tar");
  execFileSync("tar", ["-C", smallTree, "--sort=name", "--mtime=@0", "-cf", smallTar, "."]);
  rmSync(smallTree, { recursive: true });
  const smallLayout = join(work, "small-layout");
  layoutOfLayerFile(smallLayout, smallTar, "application/vnd.oci.image.layer.v1.tar");
  // Converted RUNS times (a new store each): what a layer of many small files costs per entry.
  const smallConvert = measure(`${skiff} convert ${smallLayout}:bench --out ${outDir}`, fresh);
  const image = JSON.parse(readFileSync(join(outDir, "image.json"), "utf8"));
  const bootstrapPath = join(outDir, image.bootstrap);
  const bootstrapSize = statSync(bootstrapPath).size;
  const decode = execFileSync("node", [join(root, "bench", "decode-time.mjs"), bootstrapPath], { encoding: "utf8" }).trim();
  out.push(
    "### A layer of 100,000 small files",
    "",
    `Files of 1–20 KiB of text (${(raw / 1e6).toFixed(0)} MB in all) in 7,000 directories.`,
    "",
    "| `skiff convert` (median of " + RUNS + ") | peak RSS | bootstrap size | share of the raw bytes | bytes per file | decode + validate (median of 20) |",
    "|---|---|---|---|---|---|",
    `| ${smallConvert.wall.toFixed(2)} s | ${mib(smallConvert.rssKiB)} MiB | ${(bootstrapSize / 1e6).toFixed(2)} MB | ${((bootstrapSize / raw) * 100).toFixed(2)} % | ${(bootstrapSize / 100_000).toFixed(0)} | ${decode} |`,
    "",
    "Goals: at most 2 % of the raw size; decode within 50 ms.",
    "",
  );
} catch (err) {
  if (!(err instanceof Done)) throw err;
} finally {
  rmSync(work, { recursive: true, force: true });
}

const section = [`Measured on ${machine()}.`, "", "Command: `npm run bench:convert -- --write`", "", ...out].join("\n");
console.log(section);
if (process.argv.includes("--write") && !only) replaceSection(join(root, "docs", "benchmarks.md"), "convert", "Converting layers", section);
