// Range serving, side by side: `npm run bench:serving [-- --write] [-- --seconds 4] [-- --rounds 3] [-- --runtimes node,deno,workerd]`.
// One cached 128 MiB random blob, random single ranges of 4 KiB / 64 KiB / 1 MiB at 1 / 16 / 64
// connections, served by nginx (the file), the Distribution registry (the blob) and skiff (the same
// blob through skiff, cached before measuring) on Node, Deno and workerd. Servers run on CPU 1, the
// load generators on CPU 0. wrk gives each server's rate and p99; `skiff bench ranges` runs against
// skiff too, checking every answer, and its row says client-bound when it falls below 0.8× wrk's
// rate on nginx for that cell (the load generator, not the server, is then the limit).
// Needs wrk, nginx, docker-registry and taskset.
import { createHash, randomFillSync } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { machine, median, replaceSection } from "./report.mjs";
import { pushBlob, requireTools, root, runSkiffBench, runWrk, startNginx, startNodeCeiling, startRegistry, startSkiff, writeWrkScript } from "./servers.mjs";

const { values } = parseArgs({
  options: {
    write: { type: "boolean", default: false },
    seconds: { type: "string", default: "4" },
    rounds: { type: "string", default: "3" },
    runtimes: { type: "string", default: "node,deno,workerd" },
  },
});
const SECONDS = Number(values.seconds);
const ROUNDS = Number(values.rounds);
const RUNTIMES = values.runtimes.split(",");
const SIZE = 128 * 2 ** 20;
const RANGES = [
  ["4k", 4096],
  ["64k", 65536],
  ["1m", 2 ** 20],
];
const CONNECTIONS = [1, 16, 64];
requireTools("wrk", "nginx", "docker-registry", "taskset");

const dir = mkdtempSync(join(tmpdir(), "skiff-bench-serving-"));
const servers = [];
const stopAll = async () => {
  for (const s of servers.reverse()) await s.stop();
  rmSync(dir, { recursive: true, force: true });
};
process.once("SIGINT", () => stopAll().then(() => process.exit(130)));

try {
  const blob = randomFillSync(Buffer.alloc(SIZE));
  const digest = `sha256:${createHash("sha256").update(blob).digest("hex")}`;
  const www = join(dir, "www");
  mkdirSync(www);
  writeFileSync(join(www, "blob"), blob);
  const script = writeWrkScript(dir);

  const nginx = await startNginx(dir, www);
  servers.push(nginx);
  const ceiling = await startNodeCeiling(join(www, "blob"));
  servers.push(ceiling);
  const registry = await startRegistry(dir);
  servers.push(registry);
  const targets = [
    ["nginx", `${nginx.base}/blob`],
    ["node:http", `${ceiling.base}/blob`],
    ["Distribution", await pushBlob(registry.base, "bench/blob", blob, digest)],
  ];
  for (const runtime of RUNTIMES) {
    const skiff = await startSkiff(runtime, dir, registry.base);
    servers.push(skiff);
    const url = `${skiff.base}/v2/bench/blob/blobs/${digest}`;
    // Pulled through once, so every measured request is served from skiff's cache.
    const warm = await fetch(url);
    const got = Buffer.from(await warm.arrayBuffer());
    if (warm.status !== 200 || !got.equals(blob)) throw new Error(`skiff on ${runtime} did not serve the blob (${warm.status})`);
    targets.push([`skiff ${runtime}`, url]);
  }

  // JIT and page cache warm before the first measured cell.
  for (const [, url] of targets) runWrk(script, url, { size: SIZE, length: 65536, connections: 16, seconds: 1 });

  // cells[range][connections][server] = { wrk, bench? }
  const cells = {};
  for (const [label, length] of RANGES) {
    for (const connections of CONNECTIONS) {
      const cell = ((cells[label] ??= {})[connections] = {});
      // wrk against every server in turn, ROUNDS times, so that noise on the machine hits all alike;
      // each figure is the median of the rounds.
      const rounds = Object.fromEntries(targets.map(([server]) => [server, []]));
      for (let round = 0; round < ROUNDS; round++) {
        for (const [server, url] of targets) rounds[server].push(runWrk(script, url, { size: SIZE, length, connections, seconds: SECONDS }));
      }
      for (const [server, url] of targets) {
        const w = { rps: median(rounds[server].map((r) => r.rps)), p99: median(rounds[server].map((r) => r.p99)) };
        const b = server === "nginx" || server.startsWith("skiff") ? runSkiffBench(url, { sizeFlag: label, connections, seconds: SECONDS }) : undefined;
        if (b && b.errors > 0) throw new Error(`${server}: skiff bench ranges counted ${b.errors} bad answers: ${JSON.stringify(b.errorsByKind)}`);
        cell[server] = { wrk: w, bench: b };
        console.error(`${label} c${connections} ${server}: wrk ${w.rps.toFixed(0)}/s p99 ${w.p99.toFixed(2)} ms${b ? `; skiff bench ${b.rps.toFixed(0)}/s p99 ${b.p99.toFixed(2)} ms` : ""}`);
      }
    }
  }

  const skiffs = targets.map(([s]) => s).filter((s) => s.startsWith("skiff"));
  const fmt = (n) => (n >= 100 ? n.toFixed(0) : n.toFixed(1));
  const onNode = skiffs.includes("skiff node");
  const wrkTable = [
    `| range | conn | ${targets.map(([s]) => `${s} req/s (p99 ms)`).join(" | ")} | ${skiffs.map((s) => `${s} ÷ Distribution`).join(" | ")} | ${skiffs.map((s) => `${s} ÷ nginx (p99 ×)`).join(" | ")} |${onNode ? " skiff node ÷ node:http |" : ""}`,
    `|---|---:|${targets.map(() => "---:").join("|")}|${skiffs.map(() => "---:").join("|")}|${skiffs.map(() => "---:").join("|")}|${onNode ? "---:|" : ""}`,
  ];
  const benchTable = [
    `| range | conn | ${["nginx", ...skiffs].map((s) => `${s} req/s (p99 ms)`).join(" | ")} | client-bound? |`,
    `|---|---:|${["nginx", ...skiffs].map(() => "---:").join("|")}|---|`,
  ];
  for (const [label] of RANGES) {
    for (const c of CONNECTIONS) {
      const cell = cells[label][c];
      const n = cell.nginx.wrk;
      const d = cell.Distribution.wrk;
      wrkTable.push(
        `| ${label} | ${c} | ${targets.map(([s]) => `${fmt(cell[s].wrk.rps)} (${cell[s].wrk.p99.toFixed(2)})`).join(" | ")} | ${skiffs
          .map((s) => `${(cell[s].wrk.rps / d.rps).toFixed(1)}×`)
          .join(" | ")} | ${skiffs.map((s) => `${(cell[s].wrk.rps / n.rps).toFixed(2)} (${(cell[s].wrk.p99 / n.p99).toFixed(1)}×)`).join(" | ")} |${
          onNode ? ` ${(cell["skiff node"].wrk.rps / cell["node:http"].wrk.rps).toFixed(2)} |` : ""
        }`,
      );
      const clientBound = cell.nginx.bench.rps < 0.8 * n.rps;
      benchTable.push(
        `| ${label} | ${c} | ${["nginx", ...skiffs].map((s) => `${fmt(cell[s].bench.rps)} (${cell[s].bench.p99.toFixed(2)})`).join(" | ")} | ${
          clientBound ? `yes: ${(cell.nginx.bench.rps / n.rps).toFixed(2)}× wrk on nginx` : "no"
        } |`,
      );
    }
  }
  const body = `Machine: ${machine()}. Command: \`npm run bench:serving -- --write\` (wrk: median of ${ROUNDS} rounds of ${SECONDS} s per cell and server, servers taking turns; \`skiff bench\`: one run of ${SECONDS} s).

A ${SIZE / 2 ** 20} MiB random blob; random single ranges; servers on CPU 1, load generators on CPU 0
(taskset). nginx 1 worker serving the file; Distribution (Debian \`docker-registry\`) serving it as a
blob from its filesystem storage; skiff serving the same blob from its cache (pulled through once
before measuring): Node and Deno with the filesystem store, workerd with local R2 (Miniflare, the
deployment bundle). node:http is Node's own ceiling on this machine: a bare server
(bench/node-ceiling.mjs) answering ranges of the file with a blocking read and nothing else. Goals
for skiff: ≥ 10× Distribution and ≥ 0.5× nginx requests/s, p99 ≤ 2× nginx's.

wrk (one thread, a Lua script setting a random \`Range\` per request):

${wrkTable.join("\n")}

\`skiff bench ranges\` (undici; every answer checked: status, \`Content-Range\`, length), against nginx and
skiff. Where it reaches less than 0.8× wrk's rate on nginx, the load generator is the limit and the
row says client-bound:

${benchTable.join("\n")}`;
  console.log(body);
  if (values.write) replaceSection(join(root, "docs", "benchmarks.md"), "serving", "Range serving: skiff, Distribution and nginx", body);
} finally {
  await stopAll();
}
