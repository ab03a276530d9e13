// `npm run fuzz [-- options]`: a bounded fuzz campaign over every target (fuzz/targets.ts), two
// targets at a time in worker threads. Exits non-zero on any finding or hang, printing each with
// the command that replays it. Options:
//   --inputs N     inputs in all, shared evenly by the targets (default 1000000)
//   --target NAME  only this target (repeatable)
//   --seed N       campaign seed (default 1); input n of a target depends on (seed, n) only
//   --only N       run only input N (with --target): replays a finding
//   --hang-ms MS   an input still running after this long is a hang (default 10000)
//   --workers N    targets run at once (default 2)
import { parseArgs } from "node:util";
import { Worker } from "node:worker_threads";
import type { CampaignResult } from "./campaign.ts";
import { TARGETS } from "./targets.ts";

const { values } = parseArgs({
  options: {
    inputs: { type: "string", default: "1000000" },
    target: { type: "string", multiple: true },
    seed: { type: "string", default: "1" },
    only: { type: "string" },
    "hang-ms": { type: "string", default: "10000" },
    workers: { type: "string", default: "2" },
    help: { type: "boolean", short: "h" },
  },
});
if (values.help) {
  console.log("Usage: npm run fuzz -- [--inputs N] [--target NAME]... [--seed N] [--only N] [--hang-ms MS] [--workers N]");
  console.log(`Targets: ${TARGETS.map((t) => JSON.stringify(t.name)).join(", ")}`);
  process.exit(0);
}
const names = values.target ?? TARGETS.map((t) => t.name);
for (const name of names) if (!TARGETS.some((t) => t.name === name)) fail(`unknown target ${JSON.stringify(name)} (see --help)`);
const total = Number(values.inputs);
const seed = Number(values.seed);
const only = values.only === undefined ? undefined : Number(values.only);
const hangMs = Number(values["hang-ms"]);
const workers = Number(values.workers);
if (!(total > 0) || !Number.isSafeInteger(seed) || (only !== undefined && !(Number.isSafeInteger(only) && only >= 0)) || !(hangMs > 0) || !Number.isInteger(workers) || workers < 1) {
  fail("bad option value (see --help)");
}
const perTarget = Math.ceil(total / names.length);

interface Outcome {
  result?: CampaignResult;
  hang?: { input: number };
  error?: string;
}

/** Runs one target's campaign in a worker; a worker stuck on one input past hangMs is stopped. */
function campaign(name: string, onProgress: (done: number) => void): Promise<Outcome> {
  const current = new SharedArrayBuffer(4);
  const at = new Int32Array(current);
  const worker = new Worker(new URL("./worker.js", import.meta.url), { workerData: { target: name, inputs: perTarget, seed, only, current } });
  return new Promise((resolve) => {
    let last = -1;
    let since = Date.now();
    const watchdog = setInterval(() => {
      const n = Atomics.load(at, 0);
      if (n !== last) {
        last = n;
        since = Date.now();
      } else if (Date.now() - since > hangMs) {
        clearInterval(watchdog);
        void worker.terminate();
        resolve({ hang: { input: n } });
      }
    }, Math.min(1000, hangMs / 4));
    worker.on("message", (m: { progress?: number; result?: CampaignResult }) => {
      if (m.progress !== undefined) onProgress(m.progress);
      if (m.result) {
        clearInterval(watchdog);
        resolve({ result: m.result });
      }
    });
    worker.on("error", (err) => {
      clearInterval(watchdog);
      resolve({ error: err.message });
    });
  });
}

const started = Date.now();
const done = new Map<string, number>(names.map((n) => [n, 0]));
let maxRss = 0;
const showProgress = () => {
  maxRss = Math.max(maxRss, process.memoryUsage.rss());
  if (!process.stderr.isTTY) return;
  const sum = [...done.values()].reduce((a, b) => a + b, 0);
  process.stderr.write(`\rfuzz: ${sum.toLocaleString("en")} of ${(perTarget * names.length).toLocaleString("en")} inputs, ${((Date.now() - started) / 1000).toFixed(0)} s   `);
};
const outcomes = new Map<string, Outcome>();
const queue = [...names];
await Promise.all(
  Array.from({ length: Math.min(workers, queue.length) }, async () => {
    for (let name = queue.shift(); name !== undefined; name = queue.shift()) {
      const target = name;
      outcomes.set(target, await campaign(target, (n) => (done.set(target, n), showProgress())));
      showProgress();
    }
  }),
);
if (process.stderr.isTTY) process.stderr.write("\n");

let bad = 0;
console.log("| target | inputs | accepted | refused | crashes | hangs | slowest input (ms) |");
console.log("|---|---:|---:|---:|---:|---:|---:|");
for (const name of names) {
  const o = outcomes.get(name)!;
  const r = o.result;
  if (r) {
    maxRss = Math.max(maxRss, r.maxRssBytes);
    console.log(`| ${name} | ${r.inputs} | ${r.accepted} | ${r.refused} | ${r.crashes} | 0 | ${r.slowestMs.toFixed(0)} |`);
  } else {
    console.log(`| ${name} | — | — | — | — | ${o.hang ? 1 : 0} | — |`);
  }
}
console.log(`\n${(Date.now() - started) / 1000} s; largest resident set ${(maxRss / 2 ** 20).toFixed(0)} MiB; seed ${seed}.`);
const replay = (name: string, input: number) => `npm run fuzz -- --target '${name}' --seed ${seed} --only ${input}`;
for (const name of names) {
  const o = outcomes.get(name)!;
  if (o.hang) {
    bad++;
    console.log(`\nHANG ${name}: input ${o.hang.input} ran past ${hangMs} ms. Replay: ${replay(name, o.hang.input)}`);
  }
  if (o.error) {
    bad++;
    console.log(`\nERROR ${name}: the campaign itself failed: ${o.error}`);
  }
  for (const f of o.result?.findings ?? []) {
    bad++;
    console.log(`\nFINDING ${name} input ${f.input}: ${f.error}\n  replay: ${replay(name, f.input)}\n  input (base64): ${f.bytes.length > 2000 ? `${f.bytes.slice(0, 2000)}…` : f.bytes}`);
  }
}
process.exit(bad > 0 ? 1 : 0);

function fail(message: string): never {
  console.error(`fuzz: ${message}`);
  process.exit(2);
}
