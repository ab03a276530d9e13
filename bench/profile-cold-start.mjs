// Where a cold start's time goes: `npm run build && node bench/profile-cold-start.mjs [options]`.
// The cold-start benchmark's image, workload and warm edge (bench/lazy-mount.mjs, both codecs
// converted first), a fresh `skiff mount --overlay` on an empty chunk cache per run with
// SKIFF_TRACE set, the trace summarised: process start, the bootstrap's request, response and
// decoding, the mount, then the workload's reads: how many waited for chunks, and each wait split
// into the request's round trip (sent to first byte), its transfer (first byte to last) and CPU
// (inflating and hashing the chunks, writing them to the cache). Learned prefetch is off (a first
// node has nothing learned) unless a case's flags say otherwise, or with --second-node: then, in
// each round, the image is copied to a repository of its own and a first mount runs the workload
// there unmeasured, so that every measured run is a second node. `--workload other` measures another
// program on the same image (after the first one's list was learned, with --second-node).
// Needs root (FUSE, chroot).
//   node bench/profile-cold-start.mjs [--link slow|loopback|both] [--rounds 3] [--second-node] [--workload numpy|other]
//        [--case 'LABEL=FLAGS']... [--json FILE] [--keep-traces DIR]
// A case's FLAGS are `skiff mount` flags split on spaces; without --case, one: today's defaults.
// `--baseline PATH` (another build's bin/skiff.js) runs every case with that build too.
// Each round runs every case in turn, so that a changing load touches them alike.
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { coldStart, copyBenchImage, finishMount, OTHER_PYTHON_WORKLOAD, PYTHON_WORKLOAD, warmPythonEdge } from "./lazy-mount.mjs";
import { startLinkRelay } from "./link-relay.mjs";
import { median } from "./report.mjs";
import { requireTools } from "./servers.mjs";

const { values } = parseArgs({
  options: {
    link: { type: "string", default: "slow" },
    rounds: { type: "string", default: "3" },
    case: { type: "string", multiple: true },
    json: { type: "string" },
    "keep-traces": { type: "string" },
    "second-node": { type: "boolean", default: false },
    workload: { type: "string", default: "numpy" },
    baseline: { type: "string" },
  },
});
const WORKLOADS = { numpy: PYTHON_WORKLOAD, other: OTHER_PYTHON_WORKLOAD };
const workload = WORKLOADS[values.workload];
if (!workload) throw new Error(`--workload: one of ${Object.keys(WORKLOADS).join(", ")}`);
const ROUNDS = Math.min(10, Math.max(1, Number(values.rounds)));
const SLOW = { latencyMs: 10, rateBitsPerSecond: 100e6 }; // 20 ms RTT, 100 Mbit/s each way, as bench:cold-start
const cases = (values.case ?? ["defaults="]).map((c) => {
  const at = c.indexOf("=");
  const label = at < 0 ? c : c.slice(0, at);
  const flags = at < 0 ? [] : c.slice(at + 1).split(" ").filter(Boolean);
  const learned = values["second-node"] || flags.some((f) => f.includes("learned-prefetch"));
  return { label, flags: learned ? flags : [...flags, "--no-learned-prefetch"] };
});
if (values.baseline) cases.push(...cases.map((c) => ({ ...c, label: `${c.label} (baseline)`, bin: values.baseline })));
requireTools("docker-registry", "skopeo", "chroot");
if (process.getuid?.() !== 0) throw new Error("profile-cold-start needs root (FUSE mounts, chroot)");

/** The trace of one run, summarised; `outputAt` is the workload's output in the agent's clock (ms). */
function summarise(events, outputAt) {
  const at = (name) => events.find((e) => e.event === name)?.t;
  const requests = new Map();
  for (const e of events) {
    if (!e.event.startsWith("chunk-")) continue;
    const r = requests.get(e.id) ?? {};
    requests.set(e.id, r);
    if (e.event === "chunk-request") Object.assign(r, { start: e.t, bytes: e.bytes, chunks: e.chunks });
    else if (e.event === "chunk-response") r.response = e.t;
    else if (e.event === "chunk-end") Object.assign(r, { end: e.t, verifyMs: e.verifyMs });
  }
  const writes = events.filter((e) => e.event === "cache-write");
  const waits = new Map();
  for (const e of events) {
    if (e.event === "read-wait") waits.set(e.wait, { start: e.t, chunks: e.chunks });
    else if (e.event === "read-wait-end" && waits.has(e.wait)) waits.get(e.wait).end = e.t;
  }
  const waitedOn = new Set();
  const split = [];
  for (const w of waits.values()) {
    if (w.end === undefined) continue;
    // The request that brought the wait's last chunk: the latest one holding any of its chunks sent before the wait ended.
    const serving = [...requests.entries()].filter(([, r]) => r.start <= w.end && r.chunks?.some((c) => w.chunks.includes(c)));
    serving.forEach(([id]) => waitedOn.add(id));
    const r = serving.map(([, r]) => r).sort((a, b) => (b.end ?? 0) - (a.end ?? 0))[0];
    const total = w.end - w.start;
    if (!r || r.response === undefined || r.end === undefined) {
      split.push({ total, roundTrip: 0, transfer: 0, cpu: 0, other: total, joined: false });
      continue;
    }
    // Only the part of each phase that fell inside the wait counts (a wait may join a request in flight).
    const inside = (from, to) => Math.max(0, Math.min(to, w.end) - Math.max(from, w.start));
    const roundTrip = inside(r.start, r.response);
    const verifyFrom = r.end - (r.verifyMs ?? 0);
    const transfer = inside(r.response, verifyFrom);
    const write = writes.find((x) => x.t >= r.end && x.t <= w.end);
    const cpu = inside(verifyFrom, r.end) + (write?.ms ?? 0);
    split.push({ total, roundTrip, transfer, cpu, other: Math.max(0, total - roundTrip - transfer - cpu), joined: r.start < w.start });
  }
  // The time at least one read was blocked on the proxy (reads can wait side by side).
  const intervals = [...waits.values()].filter((w) => w.end !== undefined).map((w) => [w.start, w.end]).sort((a, b) => a[0] - b[0]);
  let blocked = 0;
  let reach = -Infinity;
  for (const [s, e] of intervals) {
    if (e > reach) blocked += e - Math.max(s, reach);
    reach = Math.max(reach, e);
  }
  const sum = (k) => split.reduce((n, s) => n + s[k], 0);
  const all = [...requests.values()].filter((r) => r.end !== undefined);
  const mounted = at("mounted");
  return {
    agentStartMs: at("agent-start"),
    bootstrapRequestMs: at("bootstrap-request"),
    bootstrapResponseMs: at("bootstrap-response"),
    bootstrapDecodedMs: at("bootstrap-decoded"),
    mountedMs: mounted,
    outputMs: outputAt,
    waits: split.length,
    waitsJoined: split.filter((s) => s.joined).length,
    blockedMs: blocked,
    waitMs: sum("total"),
    roundTripMs: sum("roundTrip"),
    transferMs: sum("transfer"),
    cpuMs: sum("cpu"),
    otherMs: sum("other"),
    workloadOwnMs: outputAt - mounted - blocked,
    requests: all.length,
    requestsWaitedOn: waitedOn.size,
    bytes: all.reduce((n, r) => n + (r.bytes ?? 0), 0),
    bytesWaitedOn: [...waitedOn].reduce((n, id) => n + (requests.get(id)?.bytes ?? 0), 0),
    verifyMsAll: all.reduce((n, r) => n + (r.verifyMs ?? 0), 0),
    cacheWriteMsAll: writes.reduce((n, x) => n + x.ms, 0),
    medianRoundTripMs: median(all.filter((r) => r.response !== undefined).map((r) => r.response - r.start)),
  };
}

const fmt = (ms) => (ms === undefined ? "-" : (ms / 1000).toFixed(2));

function report(label, link, s, load) {
  console.log(`\n${link}, ${label} (median of ${ROUNDS}; load ${load}):`);
  console.log(`  process start → agent start ${fmt(s.agentStartMs)} s, bootstrap request ${fmt(s.bootstrapRequestMs)} s, response ${fmt(s.bootstrapResponseMs)} s, decoded ${fmt(s.bootstrapDecodedMs)} s, mounted ${fmt(s.mountedMs)} s, output ${fmt(s.outputMs)} s (from spawn: ${s.seconds.toFixed(2)} s)`);
  console.log(`  ${s.waits} reads waited (${s.waitsJoined} on a request already in flight), blocked ${fmt(s.blockedMs)} s in all; summed waits ${fmt(s.waitMs)} s = round trips ${fmt(s.roundTripMs)} + transfer ${fmt(s.transferMs)} + CPU ${fmt(s.cpuMs)} + other ${fmt(s.otherMs)}`);
  console.log(`  workload's own time (mounted to output, not blocked) ${fmt(s.workloadOwnMs)} s; ${s.requests} requests (${s.requestsWaitedOn} waited on), ${(s.bytes / 1e6).toFixed(1)} MB (${(s.bytesWaitedOn / 1e6).toFixed(1)} MB waited on), median request to first byte ${s.medianRoundTripMs?.toFixed(0)} ms; inflate + hash ${fmt(s.verifyMsAll)} s, cache writes ${fmt(s.cacheWriteMsAll)} s`);
}

const work = mkdtempSync(join(tmpdir(), "skiff-profile-"));
const cleanups = [];
process.once("SIGINT", () => void finish().then(() => process.exit(130)));
async function finish() {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => {});
  rmSync(work, { recursive: true, force: true });
}

const results = [];
try {
  const { edge, registry } = await warmPythonEdge(work, cleanups);
  const relay = await startLinkRelay({ target: { host: "127.0.0.1", port: edge.port }, ...SLOW });
  cleanups.push(() => relay.close());
  const links = [
    ["loopback", edge.url],
    ["100 Mbit/s, 20 ms RTT", `http://127.0.0.1:${relay.port}`],
  ].filter(([name]) => values.link === "both" || (values.link === "slow") === name.startsWith("100"));
  if (values["keep-traces"]) mkdirSync(values["keep-traces"], { recursive: true });
  for (const [link, base] of links) {
    // Round by round, every case in turn: a load that changes during the run touches them alike.
    const runsOf = cases.map(() => []);
    const loadBefore = loadavg()[0];
    for (let round = 0; round < ROUNDS; round++) {
      let image = `${base}/bench/py:1`;
      if (values["second-node"]) {
        // A first node runs the first workload unmeasured; stopping, it reports what it read first.
        image = `${base}/${await copyBenchImage(registry.base, edge, `bench/profile-${link.length}-${round}`)}:1`;
        await finishMount(await coldStart(image, [], { work, workload: PYTHON_WORKLOAD }));
      }
      for (const [c, { label, flags }] of cases.entries()) {
        const traceFile = join(work, `trace-${link.length}-${c}-${round}.jsonl`);
        process.env.SKIFF_TRACE = traceFile;
        const spawnedAt = performance.timeOrigin + performance.now();
        const run = await coldStart(image, flags, { work, workload, bin: cases[c].bin });
        delete process.env.SKIFF_TRACE;
        const stats = await finishMount(run);
        const events = readFileSync(traceFile, "utf8").trim().split("\n").map((l) => JSON.parse(l));
        if (values["keep-traces"]) copyFileSync(traceFile, join(values["keep-traces"], `${link.startsWith("100") ? "slow" : "loopback"}-${label}-${round}.jsonl`));
        const origin = events[0].timeOrigin;
        const s = summarise(events, spawnedAt + run.seconds * 1000 - origin);
        s.seconds = run.seconds;
        s.spawnToOriginMs = origin - spawnedAt;
        s.fetched = stats.bytesFetched;
        runsOf[c].push(s);
        console.error(`${link}, ${label}: ${run.seconds.toFixed(2)} s, ${s.waits} waits, blocked ${fmt(s.blockedMs)} s, ${(stats.bytesFetched / 1e6).toFixed(1)} MB in ${stats.requests} requests`);
      }
    }
    const load = `${loadBefore.toFixed(1)} → ${loadavg()[0].toFixed(1)} on ${cpus().length} cores`;
    for (const [c, { label, flags }] of cases.entries()) {
      const runs = runsOf[c];
      const med = Object.fromEntries(Object.keys(runs[0]).map((k) => [k, median(runs.map((r) => r[k]).filter((v) => typeof v === "number"))]));
      report(label, link, med, load);
      results.push({ link, label, flags, load, median: med, runs: runs.map((r) => ({ seconds: r.seconds, waits: r.waits, blockedMs: r.blockedMs, fetched: r.fetched })) });
    }
  }
  if (values.json) writeFileSync(values.json, JSON.stringify(results, null, 2) + "\n");
} finally {
  await finish();
}
