// Warm sequential read through `skiff mount`, alone: `npm run bench:warm-read [-- --rounds 5] [-- --cpu-prof DIR]`.
// The warm edge of bench:cold-start (the Debian image with python3 and numpy behind `skiff serve`,
// converted before; bench/lazy-mount.mjs), a `skiff mount --prefetch all` waited out, then with the
// kernel's caches dropped before each run: `cat` of the image's largest file (MB/s) and `find` +
// stat of the whole tree (s), through the mount, on local disk and through fuse-native doing nothing
// (bench/warm-reads.mjs). Prints each round and the medians; writes nothing. `--cpu-prof DIR` runs
// the agent under `node --cpu-prof` (its profile lands in DIR when the mount stops). Root only;
// loopback only (the image comes from the bench cache, built once by bench:cold-start).
//   node bench/warm-read.mjs [--rounds 5] [--cpu-prof DIR] [--no-ceiling] [--no-find]
import { mkdtempSync, rmSync } from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { warmPythonEdge } from "./lazy-mount.mjs";
import { machine } from "./report.mjs";
import { requireTools } from "./servers.mjs";
import { warmReads } from "./warm-reads.mjs";

const { values } = parseArgs({ options: { rounds: { type: "string", default: "5" }, "cpu-prof": { type: "string" }, "no-ceiling": { type: "boolean", default: false }, "no-find": { type: "boolean", default: false } } });
requireTools("docker-registry", "skopeo");
if (process.getuid?.() !== 0) throw new Error("bench/warm-read.mjs needs root (FUSE, dropping the page cache)");

const load = (l) => l.map((x) => x.toFixed(2)).join(" / ");
console.error(`${machine()}; load average ${load(loadavg())} on ${cpus().length} cores`);
const work = mkdtempSync(join(tmpdir(), "skiff-bench-warm-"));
const cleanups = [];
const finish = async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => {});
  rmSync(work, { recursive: true, force: true });
};
process.once("SIGINT", () => void finish().then(() => process.exit(130)));
try {
  const { layer, edge } = await warmPythonEdge(work, cleanups);
  const nodeArgs = values["cpu-prof"] ? ["--cpu-prof", "--cpu-prof-dir", values["cpu-prof"]] : [];
  const r = await warmReads({ edgeUrl: edge.url, tarFile: layer.tarFile, work, cleanups, rounds: Number(values.rounds), nodeArgs, ceiling: !values["no-ceiling"], find: !values["no-find"] });
  console.log(`sequential read of ${(r.fileBytes / 1e6).toFixed(0)} MB: mount ${r.mountMBps.toFixed(0)} MB/s (rounds: ${r.mountRunsMBps.join(", ")})` + (r.localMBps ? `, local ${r.localMBps.toFixed(0)} MB/s, fuse-native ${r.ceilingMBps.toFixed(0)} MB/s` : ""));
  console.log(`the agent in each read: ${r.agentRuns.map((a) => `${a.faults} page faults, ${a.cpuS.toFixed(2)} s CPU`).join("; ")}`);
  if (r.mountFindS !== undefined) console.log(`find + stat of ${r.entries} entries: mount ${r.mountFindS.toFixed(2)} s` + (r.localFindS ? `, local ${r.localFindS.toFixed(2)} s, fuse-native ${r.ceilingFindS.toFixed(2)} s` : ""));
  console.log(`load average at the end: ${load(loadavg())}`);
} finally {
  await finish();
}
