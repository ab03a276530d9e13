// Memory per tar entry while a layer converts: `npm run bench:entry-memory [-- --write]`.
// Synthetic node_modules-like layers (bench/entry-memory-layer.mjs) of 50,000, 150,000 and 300,000
// small files are converted, each in a process of its own (bench/entry-memory-child.mjs), with the
// live heap measured after a collection every 256 KiB of layer read and with the result held; a
// straight line fitted to the peak live heap against the entry count gives the bytes per entry (its
// slope) and a fixed base. Then the 300,000-file layer is converted under --max-old-space-size=128,
// as a Worker's 128 MB would allow, timed, with its peak RSS; and, unless --no-workerd, through the
// Worker in workerd (bench/entry-memory-worker.mjs).
//   node bench/entry-memory.mjs [--write] [--sizes 50000,150000,300000] [--no-workerd]
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { writeNodeModulesLayer } from "./entry-memory-layer.mjs";
import { machine, replaceSection } from "./report.mjs";

const root = fileURLToPath(new URL("..", import.meta.url));
const { values: args } = parseArgs({ options: { write: { type: "boolean" }, sizes: { type: "string", default: "50000,150000,300000" }, "no-workerd": { type: "boolean" } } });
const sizes = args.sizes.split(",").map(Number);
const MiB = 2 ** 20;
const work = mkdtempSync(join(tmpdir(), "skiff-bench-entry-memory-"));

function convert(layer, flags, sample) {
  const store = mkdtempSync(join(work, "store-"));
  const r = spawnSync(process.execPath, [...flags, join(root, "bench", "entry-memory-child.mjs"), layer.path, layer.digest, String(layer.size), store, ...(sample ? ["--sample"] : [])], { encoding: "utf8", timeout: 600_000 });
  rmSync(store, { recursive: true, force: true });
  if (r.status !== 0) return { failed: `exit ${r.status ?? r.signal}: ${(r.stderr || "").trim().split("\n").slice(-3).join(" / ").slice(0, 300)}` };
  return JSON.parse(r.stdout.trim().split("\n").at(-1));
}

try {
  const layers = sizes.map((files) => ({ files, path: join(work, `layer-${files}.tar.gz`) }));
  for (const l of layers) Object.assign(l, writeNodeModulesLayer(l.path, l.files));
  const points = [];
  for (const l of layers) {
    const m = convert(l, ["--expose-gc"], true);
    if (m.failed) throw new Error(`converting ${l.files} files: ${m.failed}`);
    points.push({ ...l, ...m, live: m.peakHeap - m.baseHeap });
    console.log(`${l.entries} entries (${(l.size / MiB).toFixed(1)} MiB gzip): peak live heap ${(m.peakHeap / MiB).toFixed(1)} MiB (${((m.peakHeap - m.baseHeap) / MiB).toFixed(1)} MiB over the base; ${((m.atEncode - m.baseHeap) / MiB).toFixed(1)} MiB with the tree and the bootstrap both held), bootstrap ${(m.bootstrapBytes / MiB).toFixed(1)} MiB`);
  }
  // Least squares: live heap = base + slope × entries.
  const n = points.length;
  const mx = points.reduce((s, p) => s + p.entries, 0) / n;
  const my = points.reduce((s, p) => s + p.live, 0) / n;
  const slope = points.reduce((s, p) => s + (p.entries - mx) * (p.live - my), 0) / points.reduce((s, p) => s + (p.entries - mx) ** 2, 0);
  const intercept = my - slope * mx;
  console.log(`per entry: ${slope.toFixed(0)} bytes; fixed base ${(intercept / MiB).toFixed(1)} MiB over the process's own`);

  const largest = layers.at(-1);
  const limited = convert(largest, ["--max-old-space-size=128"], false);
  const limitedText = limited.failed ? `failed (${limited.failed})` : `${limited.seconds.toFixed(1)} s, peak RSS ${(limited.maxRss / MiB).toFixed(0)} MiB`;
  console.log(`${largest.entries} entries under --max-old-space-size=128: ${limitedText}`);

  let workerd = null;
  if (!args["no-workerd"]) {
    const { convertInWorkerd } = await import("./entry-memory-worker.mjs");
    workerd = await convertInWorkerd(largest);
    console.log(`${largest.entries} entries in workerd: ${workerd.text}`);
  }

  if (args.write) {
    const rows = points.map((p) => `| ${p.files.toLocaleString("en")} | ${p.entries.toLocaleString("en")} | ${(p.size / MiB).toFixed(1)} MiB | ${(p.peakHeap / MiB).toFixed(1)} MiB | ${(p.live / MiB).toFixed(1)} MiB | ${((p.atEncode - p.baseHeap) / MiB).toFixed(1)} MiB | ${(p.bootstrapBytes / MiB).toFixed(1)} MiB |`);
    const body = [
      `${machine()}. Command: \`npm run bench:entry-memory -- --write\`.`,
      "",
      "Synthetic node_modules-like layers (small files of their own content, packages nested in packages), converted with codec none in a process of their own. The live heap (V8 heap and array buffers: typed arrays count in a Worker's 128 MB) is measured after a full collection every 256 KiB of layer read, when the bootstrap has just been encoded (tree and bootstrap both held), and with the result held.",
      "",
      "| files | tar entries | layer (gzip) | peak live heap | over the base | tree + bootstrap | bootstrap |",
      "|---|---|---|---|---|---|---|",
      ...rows,
      "",
      `**Per entry: ${slope.toFixed(0)} bytes** (least-squares slope of the peak live heap against the entries), above a fixed base of ${(intercept / MiB).toFixed(1)} MiB.`,
      "",
      `${largest.entries.toLocaleString("en")} entries under \`node --max-old-space-size=128\`: ${limitedText}.`,
      ...(workerd ? ["", `The same layer through the Worker in workerd, with V8's heap limited to 128 MB (\`--max-old-space-size=128\` in workerd's config; over it workerd ends): a one-layer image in a local registry, the layer's bootstrap asked for, then the image's (the layer's bytes without a merge): ${workerd.text}.`] : []),
    ].join("\n");
    replaceSection(join(root, "docs", "benchmarks.md"), "entry-memory", "Memory per tar entry", body);
  }
} finally {
  rmSync(work, { recursive: true, force: true });
}
