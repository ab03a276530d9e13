// What a bounded store costs: `npm run bench:store-bound [-- --write] [-- --seconds 4] [-- --rounds 5]`.
//   1. Range serving: wrk against two skiffs on Node serving the same cached 128 MiB random blob, one
//      with no bound and one with --max-store-size far above what it holds (every request pays the
//      bookkeeping, nothing is evicted), taking turns round by round. Random single ranges of 4 KiB,
//      64 KiB and 1 MiB at 16 connections; servers on CPU 1, wrk on CPU 0 (as bench:serving).
//   2. Eviction itself, in this process: 4 KiB objects written into the filesystem store with and
//      without a bound of 1,000 of them, so that every write past the first 1,000 evicts one.
// Goal (issue): range serving with the bound on within 5 % of the rate without it.
import { createHash, randomFillSync } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { machine, median, replaceSection } from "./report.mjs";
import { requireTools, root, runWrk, startRegistry, startSkiff, pushBlob, writeWrkScript } from "./servers.mjs";

const { values } = parseArgs({
  options: {
    write: { type: "boolean", default: false },
    seconds: { type: "string", default: "4" },
    rounds: { type: "string", default: "7" },
    ranges: { type: "string", default: "4k,64k,1m" },
  },
});
const SECONDS = Number(values.seconds);
const ROUNDS = Number(values.rounds);
const SIZE = 128 * 2 ** 20;
const RANGES = [
  ["4k", 4096],
  ["64k", 65536],
  ["1m", 2 ** 20],
].filter(([label]) => values.ranges.split(",").includes(label));
const CONNECTIONS = 16;
requireTools("wrk", "docker-registry", "taskset");

const dir = mkdtempSync(join(tmpdir(), "skiff-bench-store-bound-"));
const servers = [];
const stopAll = async () => {
  for (const s of servers.reverse()) await s.stop();
  rmSync(dir, { recursive: true, force: true });
};
process.once("SIGINT", () => stopAll().then(() => process.exit(130)));

/** µs per 4 KiB write into a filesystem store, bounded at `bound` objects (none when 0). */
async function writeCost(count, bound) {
  const { FsStore } = await import(join(root, "dist", "src", "store", "fs.js"));
  const { BoundedStore } = await import(join(root, "dist", "src", "store", "bounded.js"));
  const { putBytes } = await import(join(root, "dist", "src", "store", "store.js"));
  const files = await new FsStore(join(dir, `writes-${bound}`)).init();
  const store = bound ? await BoundedStore.open(files, { maxBytes: bound * 4096 }) : files;
  const body = randomFillSync(new Uint8Array(4096));
  const key = (i) => {
    const hex = i.toString(16).padStart(64, "0");
    return `blobs/sha256/${hex.slice(-2)}/${hex}`;
  };
  const t0 = performance.now();
  for (let i = 0; i < count; i++) await putBytes(store, key(i), body);
  const us = ((performance.now() - t0) * 1000) / count;
  return { us, evictions: bound ? store.usage().evictions : 0 };
}

try {
  const blob = randomFillSync(Buffer.alloc(SIZE));
  const digest = `sha256:${createHash("sha256").update(blob).digest("hex")}`;
  const script = writeWrkScript(dir);
  const registry = await startRegistry(dir, { quiet: true });
  servers.push(registry);
  await pushBlob(registry.base, "bench/blob", blob, digest);
  const targets = [];
  for (const [name, args] of [
    ["unbounded", []],
    ["bounded", ["--max-store-size", "64g"]],
  ]) {
    const skiff = await startSkiff("node", dir, registry.base, { name, args });
    servers.push(skiff);
    const url = `${skiff.base}/v2/bench/blob/blobs/${digest}`;
    const warm = await fetch(url);
    if (warm.status !== 200 || !Buffer.from(await warm.arrayBuffer()).equals(blob)) throw new Error(`skiff ${name} did not serve the blob (${warm.status})`);
    targets.push([name, url]);
  }
  for (const [, url] of targets) runWrk(script, url, { size: SIZE, length: 65536, connections: CONNECTIONS, seconds: 1 });

  const rows = [];
  for (const [label, length] of RANGES) {
    const rounds = { unbounded: [], bounded: [] };
    for (let round = 0; round < ROUNDS; round++) {
      // Each round starts with the other server, so a drift over time hits both alike.
      const order = round % 2 === 0 ? targets : [...targets].reverse();
      for (const [name, url] of order) rounds[name].push(runWrk(script, url, { size: SIZE, length, connections: CONNECTIONS, seconds: SECONDS }).rps);
    }
    const [a, b] = [median(rounds.unbounded), median(rounds.bounded)];
    // The two servers of one round ran back to back: their ratio is the paired comparison, less
    // exposed to the machine's drift than the ratio of the medians.
    const ratio = median(rounds.bounded.map((r, i) => r / rounds.unbounded[i]));
    console.error(`${label}: unbounded ${a.toFixed(0)}/s (${rounds.unbounded.map((r) => r.toFixed(0)).join(", ")}), bounded ${b.toFixed(0)}/s (${rounds.bounded.map((r) => r.toFixed(0)).join(", ")})`);
    rows.push(`| ${label} | ${CONNECTIONS} | ${a.toFixed(0)} | ${b.toFixed(0)} | ${ratio.toFixed(3)} | ${ratio >= 0.95 ? "met" : "not met"} |`);
  }

  const COUNT = 20_000;
  const plain = await writeCost(COUNT, 0);
  const evicting = await writeCost(COUNT, 1000);
  console.error(`writes: ${plain.us.toFixed(1)} µs unbounded, ${evicting.us.toFixed(1)} µs bounded (${evicting.evictions} evictions)`);

  const body = `Machine: ${machine()}. Command: \`npm run bench:store-bound -- --write\` (wrk: median of ${ROUNDS} rounds of ${SECONDS} s per cell, the two servers taking turns).

Range serving: the same cached ${SIZE / 2 ** 20} MiB random blob from two skiffs on Node, one with no
bound, one with \`--max-store-size 64g\` (every request pays the bookkeeping: the object's unit marked
used, held while it is read; nothing is evicted). Random single ranges, ${CONNECTIONS} connections;
servers on CPU 1, wrk on CPU 0. Goal: the bounded rate within 5 % of the unbounded one. The
rates are the medians of the rounds; the ratio is the median of each round's ratio (the two
servers of a round run back to back).

| range | conn | no bound req/s | bounded req/s | bounded ÷ no bound (median of the rounds' ratios) | goal ≥ 0.95 |
|---|---:|---:|---:|---:|---|
${rows.join("\n")}

Eviction itself: ${COUNT.toLocaleString("en")} objects of 4 KiB written one after another into the
filesystem store (write, fsync, rename), without a bound and with a bound of 1,000 of them, so that
each write past the first 1,000 first evicts one (an unlink):

| store | µs per write | evictions |
|---|---:|---:|
| no bound | ${plain.us.toFixed(1)} | 0 |
| bounded at 1,000 objects | ${evicting.us.toFixed(1)} | ${evicting.evictions} |`;
  console.log(body);
  if (values.write) replaceSection(join(root, "docs", "benchmarks.md"), "store-bound", "The bounded store's cost", body);
} finally {
  await stopAll();
}
