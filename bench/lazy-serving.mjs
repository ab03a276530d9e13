// Lazy-route serving against nginx: `npm run bench:lazy-serving [-- --write] [-- --seconds 4] [-- --rounds 3]`.
// The realistic layer (bench/debian-layer.mjs: debootstrapped Debian with python3 and numpy, one gzip
// layer) is pushed to a Distribution registry and converted by skiff on Node (a warm edge); nginx
// serves the same bytes: the layer's data blob as one file, and each of its chunks as a file of its
// own. Then, servers taking turns round by round (servers on CPU 1, load generators on CPU 0):
//   - random single ranges (64 KiB, 1 MiB) of the data blob, with `skiff bench ranges` (every answer
//     checked) and with wrk;
//   - whole chunks: GETs of random chunk URLs (`…/chunks/<hex>.none` on skiff, `/chunks/<hex>.none`
//     on nginx) with wrk;
//   - every chunk's extent by range of the data blob, as nodes read it, with `skiff bench ranges
//     --pattern` (bench:lazy's warm chunk serving).
// With `--baseline PATH/bin/skiff.js` (another build, e.g. from before a change), that skiff is measured
// too, in front of the same registry and warmed alike.
// Goal (issue 22): data-blob ranges ≥ 0.5× nginx's requests/s at 1 MiB.
import { createHash } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { spawnSync } from "node:child_process";
import { parseArgs } from "node:util";
import { bootstrapWithCodec, pythonImageLayer } from "./lazy-mount.mjs";
import { writeLayout } from "./oci-layout.mjs";
import { machine, median, replaceSection } from "./report.mjs";
import { CLIENT_CPU, requireTools, root, runSkiffBench, runWrk, startNginx, startRegistry, startSkiff, writeWrkScript } from "./servers.mjs";

const { values } = parseArgs({
  options: {
    write: { type: "boolean", default: false },
    seconds: { type: "string", default: "4" },
    rounds: { type: "string", default: "3" },
    connections: { type: "string", default: "1,16" },
    baseline: { type: "string" },
  },
});
const SECONDS = Number(values.seconds);
const ROUNDS = Number(values.rounds);
const CONNECTIONS = values.connections.split(",").map(Number);
requireTools("wrk", "nginx", "docker-registry", "skopeo", "taskset");

const load = () => loadavg().map((l) => l.toFixed(1)).join(" / ");
const loadAtStart = load();
const dir = mkdtempSync(join(tmpdir(), "skiff-bench-lazy-serving-"));
const servers = [];
const stopAll = async () => {
  for (const s of servers.reverse()) await s.stop();
  rmSync(dir, { recursive: true, force: true });
};
process.once("SIGINT", () => stopAll().then(() => process.exit(130)));

/** A wrk script asking for a random one of the chunk files listed in CHUNK_LIST, under CHUNK_PREFIX. */
function writeChunkScript(listFile) {
  const path = join(dir, "chunks.lua");
  writeFileSync(
    path,
    `local prefix = os.getenv("CHUNK_PREFIX")
local names = {}
for line in io.lines("${listFile}") do names[#names + 1] = line end
math.randomseed(1)
request = function()
  return wrk.format("GET", prefix .. names[math.random(1, #names)])
end
`,
  );
  return path;
}

/** wrk with the chunk script: requests/s and p99 (ms); throws on non-2xx answers. */
function wrkChunks(script, base, prefix, connections) {
  const r = spawnSync("taskset", ["-c", CLIENT_CPU, "wrk", "-t1", `-c${connections}`, `-d${SECONDS}s`, "--latency", "-s", script, base], { env: { ...process.env, CHUNK_PREFIX: prefix }, encoding: "utf8" });
  const rps = /Requests\/sec:\s+([\d.]+)/.exec(r.stdout)?.[1];
  const p99 = /^\s+99%\s+([\d.]+)(us|ms|s)\s*$/m.exec(r.stdout);
  if (!rps || !p99 || /Non-2xx/.test(r.stdout)) throw new Error(`wrk failed on ${base}${prefix}: ${r.stdout}${r.stderr}`);
  return { rps: Number(rps), p99: Number(p99[1]) * { us: 0.001, ms: 1, s: 1000 }[p99[2]] };
}

function checked(result, what) {
  if (result.errors > 0) throw new Error(`${what}: ${result.errors} bad answers ${JSON.stringify(result.firstErrors)}`);
  return { rps: result.rps, p99: result.p99 };
}

try {
  const { Bootstrap } = await import(join(root, "dist", "src", "format", "decode.js"));
  const { toHex } = await import(join(root, "dist", "src", "hash", "hasher.js"));
  const layer = await pythonImageLayer(dir);
  const layout = join(dir, "layout");
  writeLayout(layout, [layer.gz], [layer.diffId]);
  const registry = await startRegistry(dir, { quiet: true });
  servers.push(registry);
  execSkopeo(["copy", "--quiet", "--dest-tls-verify=false", "--preserve-digests", `oci:${layout}:bench`, `docker://${new URL(registry.base).host}/bench/py:1`]);
  const skiff = await startSkiff("node", dir, registry.base, { args: ["--convert-wait", "600"] });
  servers.push(skiff);
  const baseline = values.baseline ? await startSkiff("node", dir, registry.base, { name: "baseline", args: ["--convert-wait", "600"], bin: values.baseline }) : null;
  if (baseline) {
    servers.push(baseline);
    await bootstrapWithCodec(`${baseline.base}/v2/bench/py/_skiff/bootstrap/1`, "none");
  }
  const convertSeconds = await bootstrapWithCodec(`${skiff.base}/v2/bench/py/_skiff/bootstrap/1`, "none");
  const image = await fetch(`${skiff.base}/v2/bench/py/_skiff/bootstrap/1?codec=none`);
  const params = image.headers.get("skiff-params");
  const bootstrap = Bootstrap.decode(new Uint8Array(await image.arrayBuffer()));
  const layerDigest = bootstrap.blob(0).layerDigest;
  const lazyBase = `/v2/bench/py/_skiff/layers/${layerDigest}/${params}`;

  // The data blob, read through skiff and checked chunk by chunk against the bootstrap, is what
  // nginx serves. (Its ETag names the data digest, the chunk table's sha256, not the bytes'.)
  const dataRes = await fetch(`${skiff.base}${lazyBase}/data`, { headers: { Range: "bytes=0-0" } });
  const size = Number(dataRes.headers.get("content-range").split("/")[1]);
  await dataRes.arrayBuffer();
  const data = Buffer.alloc(size);
  for (let at = 0; at < size; at += 2 ** 20) {
    const end = Math.min(size, at + 2 ** 20) - 1;
    const part = await fetch(`${skiff.base}${lazyBase}/data`, { headers: { Range: `bytes=${at}-${end}` } });
    if (part.status !== 206) throw new Error(`data range ${at}: ${part.status}`);
    Buffer.from(await part.arrayBuffer()).copy(data, at);
  }
  const www = join(dir, "www");
  mkdirSync(join(www, "chunks"), { recursive: true });
  writeFileSync(join(www, "data"), data);
  const chunks = new Map();
  for (let i = 0; i < bootstrap.chunkCount; i++) {
    const c = bootstrap.chunk(i);
    const name = `${toHex(c.digest)}.${c.compressed ? params.split("-").at(-1) : "none"}`;
    if (!chunks.has(name)) chunks.set(name, c);
  }
  for (const [name, c] of chunks) {
    const stored = data.subarray(c.storedOffset, c.storedOffset + c.storedSize);
    // Codec none: a chunk's digest is that of its stored bytes.
    if (c.compressed || stored.byteLength !== c.storedSize || createHash("sha256").update(stored).digest("hex") !== toHex(c.digest)) throw new Error(`chunk ${name} read through skiff does not match the bootstrap`);
    writeFileSync(join(www, "chunks", name), stored);
  }
  if ([...chunks.values()].reduce((end, c) => Math.max(end, c.storedOffset + c.storedSize), 0) !== size) throw new Error("the data blob's size is not its chunk table's");
  const listFile = join(dir, "chunk-names.txt");
  writeFileSync(listFile, [...chunks.keys()].join("\n"));
  const patternFile = join(dir, "chunk-extents.txt");
  writeFileSync(patternFile, [...chunks.values()].map((c) => `${c.storedOffset} ${c.storedSize}`).join("\n"));
  const chunkBytes = [...chunks.values()].reduce((n, c) => n + c.storedSize, 0);
  const nginx = await startNginx(dir, www);
  servers.push(nginx);

  const rangeScript = writeWrkScript(dir);
  const chunkScript = writeChunkScript(listFile);
  const lazyTarget = (server) => ({ base: server.base, data: `${server.base}${lazyBase}/data`, chunks: `${lazyBase}/chunks/` });
  const targets = { nginx: { base: nginx.base, data: `${nginx.base}/data`, chunks: "/chunks/" }, skiff: lazyTarget(skiff), ...(baseline ? { baseline: lazyTarget(baseline) } : {}) };
  const names = Object.keys(targets);
  // Warm both (page cache, skiff's layer index and entitlement) before any measured run.
  for (const t of Object.values(targets)) {
    checked(runSkiffBench(t.data, { sizeFlag: "1m", connections: 4, seconds: 1 }), `warm-up ${t.data}`);
    wrkChunks(chunkScript, t.base, t.chunks, 4);
  }

  const cells = [];
  for (const c of CONNECTIONS) {
    for (const [label, length] of [
      ["64k", 65536],
      ["1m", 2 ** 20],
    ]) {
      cells.push({ what: `data blob, ${label} ranges`, tool: "skiff bench ranges", c, run: (t) => checked(runSkiffBench(t.data, { sizeFlag: label, connections: c, seconds: SECONDS }), `${t.data} ${label}`) });
      cells.push({ what: `data blob, ${label} ranges`, tool: "wrk", c, run: (t) => runWrk(rangeScript, t.data, { size, length, connections: c, seconds: SECONDS }) });
    }
    cells.push({ what: "whole chunks (chunk URLs)", tool: "wrk", c, run: (t) => wrkChunks(chunkScript, t.base, t.chunks, c) });
    cells.push({ what: "chunks by range of the data blob", tool: "skiff bench ranges --pattern", c, run: (t) => checked(skiffBenchPattern(t.data, patternFile, c), `${t.data} chunk extents`) });
  }
  const rows = [];
  for (const cell of cells) {
    const runs = Object.fromEntries(names.map((name) => [name, []]));
    for (let round = 0; round < ROUNDS; round++) {
      // Each round starts with another server, so a drift over time hits them alike.
      const order = names.map((_, i) => names[(i + round) % names.length]);
      for (const name of order) runs[name].push(cell.run(targets[name]));
    }
    const rps = (name) => median(runs[name].map((r) => r.rps));
    const p99 = (name) => median(runs[name].map((r) => r.p99));
    const ratio = median(runs.skiff.map((r, i) => r.rps / runs.nginx[i].rps));
    const cellOf = (name) => `${rps(name).toFixed(0)} (${p99(name).toFixed(2)})`;
    const before = baseline ? ` | ${cellOf("baseline")} | ${median(runs.skiff.map((r, i) => r.rps / runs.baseline[i].rps)).toFixed(2)}` : "";
    console.error(`${cell.what}, ${cell.c} conn, ${cell.tool}: nginx ${rps("nginx").toFixed(0)}/s, skiff ${rps("skiff").toFixed(0)}/s (${ratio.toFixed(2)}×)${baseline ? `, baseline ${rps("baseline").toFixed(0)}/s` : ""}`);
    rows.push(`| ${cell.what} | ${cell.tool} | ${cell.c} | ${cellOf("nginx")} | ${cellOf("skiff")} | ${ratio.toFixed(2)}${before} |`);
  }
  const goal = rows.filter((r) => r.startsWith("| data blob, 1m ranges | skiff bench ranges |"));

  const body = `Machine: ${machine()}. Command: \`npm run bench:lazy-serving -- --write${values.baseline ? " --baseline <build before>/bin/skiff.js" : ""}\` (median of ${ROUNDS} rounds of ${SECONDS} s per cell, the servers taking turns; servers on CPU 1, load generators on CPU 0).
Load average (1 / 5 / 15 min) at the start of the run: ${loadAtStart}; at the end: ${load()}, on ${cpus().length} cores (a load above the core count means other work competed with the benchmark).

The layer: Debian stable (debootstrap minbase) with python3 and python3-numpy, one gzip layer of
${(layer.gz.byteLength / 1e6).toFixed(0)} MB, converted by skiff on Node (\`${params}\`, ${(convertSeconds).toFixed(1)} s from a cold edge) into a data blob of
${(size / 1e6).toFixed(0)} MB and ${chunks.size} distinct chunks (${(chunkBytes / 1e6).toFixed(0)} MB). nginx (one worker) serves the same bytes from
files: the data blob as one, each chunk as one. Warm: both were read once before the measured runs.
Data-blob ranges are random single ranges, whole chunks are GETs (no \`Range\`) of random chunk URLs,
and "chunks by range" asks for every chunk's extent of the data blob in turn, as a node's lazy
mount does. \`skiff bench ranges\` checks every answer (status, \`Content-Range\`, length); it is
slower than wrk as a client (bench:serving), so its ratios lean towards 1.

| request | load generator | conn | nginx req/s (p99 ms) | skiff node req/s (p99 ms) | skiff ÷ nginx (median of the rounds' ratios) |${baseline ? " baseline build req/s (p99 ms) | skiff ÷ baseline |" : ""}
|---|---|---:|---:|---:|---:|${baseline ? "---:|---:|" : ""}
${rows.join("\n")}

Goal: data-blob ranges ≥ 0.5× nginx's req/s at 1 MiB with \`skiff bench ranges\`: ${goal.map((r) => `${r.split("|")[3].trim()} connection(s) ${Number(r.split("|")[6]) >= 0.5 ? "met" : "not met"} (${r.split("|")[6].trim()}×)`).join(", ")}.${baseline ? "\n\nThe baseline build: another build of skiff, given with `--baseline` (e.g. from before a change), warmed alike." : ""}`;
  console.log(body);
  if (values.write) replaceSection(join(root, "docs", "benchmarks.md"), "lazy-serving", "Lazy-route serving against nginx", body);
} finally {
  await stopAll();
}

function execSkopeo(args) {
  const r = spawnSync("skopeo", args, { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`skopeo ${args.join(" ")}: ${r.stderr}`);
}

/** `skiff bench ranges --pattern FILE --json` on the client CPU. */
function skiffBenchPattern(url, pattern, connections) {
  const r = spawnSync("taskset", ["-c", CLIENT_CPU, process.execPath, join(root, "bin", "skiff.js"), "bench", "ranges", url, "--duration", `${SECONDS}s`, "--concurrency", String(connections), "--pattern", pattern, "--json"], { encoding: "utf8" });
  if (r.status !== 0 && r.status !== 1) throw new Error(`skiff bench ranges failed (${r.status}): ${r.stderr}${r.stdout}`);
  return JSON.parse(r.stdout);
}
