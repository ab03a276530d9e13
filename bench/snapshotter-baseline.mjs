// The skiff snapshotter's first and second node, this build against another, taking turns:
// `npm run build && node bench/snapshotter-baseline.mjs --baseline BEFORE [--rounds 5]`, BEFORE a
// checkout of the tree before a change, built (its bench/containerd.mjs and bin/skiff.js are used).
// The cold-start benchmark's image and warm edge (bench/lazy-mount.mjs) behind its slow link
// (100 Mbit/s, 20 ms RTT); each round, for each build in turn (the order alternating), the image is
// copied to a repository of its own, a first node pulls it through CRI and runs the workload
// (bench/containerd.mjs, as bench:cold-start's snapshotter rows), then a second node does the same
// after the first one's report. Prints every run and the medians; writes nothing. Needs root and
// what bench:cold-start needs.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { copyBenchImage, PYTHON_WORKLOAD, warmPythonEdge } from "./lazy-mount.mjs";
import { startLinkRelay } from "./link-relay.mjs";
import { median } from "./report.mjs";
import { root } from "./servers.mjs";

const { values } = parseArgs({ options: { baseline: { type: "string" }, rounds: { type: "string", default: "5" } } });
if (!values.baseline) throw new Error("--baseline DIR: a built checkout of the tree to compare with");
const ROUNDS = Math.min(20, Math.max(1, Number(values.rounds)));
const builds = [
  ["this build", root],
  ["baseline", resolve(values.baseline)],
];
const drivers = await Promise.all(builds.map(([, dir]) => import(join(dir, "bench", "containerd.mjs"))));
const work = mkdtempSync(join(tmpdir(), "skiff-snapshotter-baseline-"));
const cleanups = [];
process.once("SIGINT", () => void finish().then(() => process.exit(130)));

async function finish() {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => {});
  rmSync(work, { recursive: true, force: true });
}

try {
  const { registry, edge } = await warmPythonEdge(work, cleanups);
  const host = new URL(registry.base).host;
  const relay = await startLinkRelay({ target: { host: "127.0.0.1", port: edge.port }, latencyMs: 10, rateBitsPerSecond: 100e6 });
  cleanups.push(() => relay.close());
  const proxy = `http://127.0.0.1:${relay.port}`;
  const runs = builds.map(() => ({ first: [], second: [] }));
  for (let round = 0; round < ROUNDS; round++) {
    const order = round % 2 ? [1, 0] : [0, 1];
    for (const b of order) {
      const ref = `${host}/${await copyBenchImage(registry.base, edge, `bench/baseline-${b}-${round}`, host)}:1`;
      for (const node of ["first", "second"]) {
        const containerd = await drivers[b].startContainerd(work, { skiff: { proxy, registries: [host] } });
        try {
          const r = await drivers[b].skiffPullAndRun(containerd, ref, PYTHON_WORKLOAD, { expect: "ready" });
          runs[b][node].push(r);
          console.log(`${builds[b][0]}, ${node} node: ${r.seconds.toFixed(2)} s (pull ${r.pullSeconds.toFixed(2)} s, snapshot + mount ${r.mountSeconds.toFixed(2)} s, workload ${r.runSeconds.toFixed(2)} s)`);
        } finally {
          await containerd.stop();
        }
      }
    }
  }
  console.log(`\nmedians of ${ROUNDS} (s):`);
  for (const [b, [label]] of builds.entries()) {
    for (const node of ["first", "second"]) {
      const m = (key) => median(runs[b][node].map((r) => r[key])).toFixed(2);
      console.log(`  ${label}, ${node} node: ${m("seconds")} (pull ${m("pullSeconds")}, snapshot + mount ${m("mountSeconds")}, workload ${m("runSeconds")})`);
    }
  }
} finally {
  await finish();
}
