// What a cold edge costs over a warm one: `npm run bench:cold-edge [-- --write]`. The Debian image
// with python3 and numpy of bench:cold-start (one gzip layer, built once into the bench cache) is
// pushed to a Distribution registry on loopback; skiff reaches it through bench/link-relay.mjs, the
// upstream's own link (default 1 Gbit/s, 5 ms each way). For the same image, each round measures:
//   - the upstream transfer alone: a GET of the layer blob through that link, read to its end;
//   - the time to the image bootstrap, and the cold start of the bench:cold-start workload
//     (`skiff mount --overlay`, python3 in a chroot, empty chunk cache), from a warm edge (converted
//     before) and from a cold edge (a new skiff process on an empty store: download, verification,
//     storing and conversion included);
//   - the conversion alone: a new edge that pulled the layer through its registry API first (not
//     timed), then the time to the bootstrap: one pass can't beat the larger of this and the transfer;
//   - a long-running edge (converted another variant of the image first) asked for a variant of
//     the image it has not seen: a cold image without a cold process;
//   - with `--baseline BIN` (bin/skiff.js of another build, e.g. before a change), its cold edge too.
// The transfer is timed with curl; the edge's CPU seconds and the relay's are reported as well.
// Both workloads ask for the chunk codec `--codec`, by default the one node agents ask for
// (deflate-raw: src/cli/mount.ts), whose conversion costs far more CPU than `none`'s.
// Goal: a cold edge costs at most the upstream transfer time plus 20 % over a warm edge.
// Needs root (FUSE, chroot), debootstrap the first time, docker-registry and skopeo.
//   node bench/cold-edge.mjs [--write] [--rounds 3] [--rate 1gbit] [--latency 5ms] [--codec deflate-raw|none] [--baseline PATH/bin/skiff.js]
import { execFile, execFileSync } from "node:child_process";
import { createReadStream, mkdtempSync, rmSync } from "node:fs";
import { createHash } from "node:crypto";
import { gzipSync } from "node:zlib";
import { cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs, promisify } from "node:util";
import { bootstrapWithCodec, coldStart, finishMount, PYTHON_PACKAGES as PACKAGES, PYTHON_WORKLOAD as WORKLOAD, pythonImageLayer, serveSkiff } from "./lazy-mount.mjs";
import { parseLatency, parseRate, startLinkRelay } from "./link-relay.mjs";
import { tarFileEntry, writeLayout } from "./oci-layout.mjs";
import { cpuSeconds, machine, median, replaceSection } from "./report.mjs";
import { requireTools, root, startRegistry } from "./servers.mjs";

const { values } = parseArgs({
  options: {
    write: { type: "boolean", default: false },
    rounds: { type: "string", default: "3" },
    rate: { type: "string", default: "1gbit" },
    latency: { type: "string", default: "5ms" },
    codec: { type: "string", default: "deflate-raw" },
    baseline: { type: "string" },
  },
});
const ROUNDS = Number(values.rounds);
const CODEC = values.codec;
if (!["none", "deflate-raw"].includes(CODEC)) throw new Error(`--codec ${CODEC}: none or deflate-raw`);
const LINK = { latencyMs: parseLatency(values.latency), rateBitsPerSecond: parseRate(values.rate) };
requireTools("debootstrap", "docker-registry", "skopeo", "chroot", "curl");
if (process.getuid?.() !== 0) throw new Error("bench:cold-edge needs root (FUSE mounts, chroot)");

const loadAtStart = loadavg();
const work = mkdtempSync(join(tmpdir(), "skiff-bench-cold-edge-"));
const cleanups = [];
process.once("SIGINT", () => void finish().then(() => process.exit(130)));

async function finish() {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => {});
  rmSync(work, { recursive: true, force: true });
}

const execFileAsync = promisify(execFile);
const seconds = (t0) => (performance.now() - t0) / 1000;

/**
 * Seconds for curl to GET `url` to its end, discarding the body; throws unless 200. Not this
 * process's fetch: reading 140 MB through it costs more CPU than the link's time, and this process
 * is the link (the relay), so the transfer measured that way was the bench's own limit, not the link's.
 */
async function curlTransfer(url) {
  const { stdout } = await execFileAsync("curl", ["-sS", "-o", "/dev/null", "-w", "%{http_code} %{size_download} %{time_total}", url]);
  const [status, bytes, total] = stdout.trim().split(" ").map(Number);
  if (status !== 200) throw new Error(`${url}: ${status}`);
  return { seconds: total, bytes };
}

/** Seconds to GET `url` to its end; throws unless 200. */
async function timedGet(url) {
  const t0 = performance.now();
  const res = await fetch(url);
  const body = await res.arrayBuffer();
  if (res.status !== 200) throw new Error(`${url}: ${res.status} ${Buffer.from(body).toString().slice(0, 300)}`);
  return { seconds: seconds(t0), bytes: body.byteLength, params: res.headers.get("skiff-params") };
}


/** A new edge on an empty store, the upstream through the link: `fn(edge)`, then stopped. */
async function withColdEdge(upstream, bin, fn) {
  const edge = await serveSkiff(upstream, mkdtempSync(join(work, "cold-edge-")), cleanups, bin);
  try {
    return await fn(edge);
  } finally {
    await edge.stop();
  }
}

const bootstrapPath = (edge, repo = "bench/py") => `${edge.url}/v2/${repo}/_skiff/bootstrap/1`;
const bootstrapUrl = (edge, repo) => `${bootstrapPath(edge, repo)}?codec=${CODEC}`;
const untilCodec = (edge, t0, repo) => bootstrapWithCodec(bootstrapPath(edge, repo), CODEC, t0);

/**
 * The bench image with one small file more, `n` in it, as a gzip member before the layer's own:
 * the same conversion work under another digest, so an edge that has converted the image before
 * meets it cold. Pushed as bench/variant-n:1.
 */
async function pushVariant(layer, registry, n) {
  const entry = tarFileEntry("etc/skiff-bench-variant", Buffer.from(`${n}\n`));
  const diffId = createHash("sha256").update(entry);
  for await (const piece of createReadStream(layer.tarFile)) diffId.update(piece);
  const layout = join(work, `variant-${n}`);
  writeLayout(layout, [Buffer.concat([gzipSync(entry), layer.gz])], [`sha256:${diffId.digest("hex")}`]);
  execFileSync("skopeo", ["copy", "--quiet", "--dest-tls-verify=false", "--preserve-digests", `oci:${layout}:bench`, `docker://${new URL(registry.base).host}/bench/variant-${n}:1`]);
  rmSync(layout, { recursive: true });
  return `bench/variant-${n}`;
}

async function mountRun(edge) {
  const run = await coldStart(`${edge.url}/bench/py:1`, ["--codec", CODEC], { work, workload: WORKLOAD });
  await finishMount(run);
  return run.seconds;
}

try {
  const layer = await pythonImageLayer(work);
  const { gz } = layer;
  const layout = join(work, "layout");
  writeLayout(layout, [gz], [layer.diffId]);
  const registry = await startRegistry(work, { quiet: true });
  cleanups.push(registry.stop);
  execFileSync("skopeo", ["copy", "--quiet", "--dest-tls-verify=false", "--preserve-digests", `oci:${layout}:bench`, `docker://${new URL(registry.base).host}/bench/py:1`]);
  const relay = await startLinkRelay({ target: { host: "127.0.0.1", port: Number(new URL(registry.base).port) }, ...LINK });
  cleanups.push(() => relay.close());
  const upstream = `http://127.0.0.1:${relay.port}`;

  const warm = await serveSkiff(upstream, join(work, "warm-edge"), cleanups);
  await untilCodec(warm); // converted once before any measured run
  // A long-running edge: its process has converted a layer before (its code compiled and
  // optimised, as an edge's is after its first image), and each round asks it for a variant it
  // has never seen.
  const variantRepos = [];
  for (let n = 0; n <= ROUNDS; n++) variantRepos.push(await pushVariant(layer, registry, n));
  const running = await serveSkiff(upstream, join(work, "running-edge"), cleanups);
  await untilCodec(running, undefined, variantRepos[0]);

  const variants = [["cold edge", undefined], ...(values.baseline ? [["cold edge, baseline build", values.baseline]] : [])];
  const samples = { transfer: [], convertOnly: [], convertOnlyCpu: [], warmBootstrap: [], warmMount: [], running: [], runningCpu: [] };
  for (const [name] of variants) Object.assign(samples, { [`${name}:bootstrap`]: [], [`${name}:cpu`]: [], [`${name}:relayCpu`]: [], [`${name}:mount`]: [], [`${name}:codec`]: [] });
  /** Skiff-Params of each variant's first cold answer. */
  const answered = {};
  for (let round = 0; round < ROUNDS; round++) {
    const transfer = await curlTransfer(`${upstream}/v2/bench/py/blobs/${layer.digest}`);
    if (transfer.bytes !== gz.length) throw new Error(`transfer read ${transfer.bytes} of ${gz.length} bytes`);
    samples.transfer.push(transfer.seconds);
    await withColdEdge(upstream, undefined, async (edge) => {
      await timedGet(`${edge.url}/v2/bench/py/blobs/${layer.digest}`);
      const cpu0 = cpuSeconds(edge.pid);
      samples.convertOnly.push((await timedGet(bootstrapUrl(edge))).seconds);
      samples.convertOnlyCpu.push(cpuSeconds(edge.pid) - cpu0);
    });
    samples.warmBootstrap.push((await timedGet(bootstrapUrl(warm))).seconds);
    samples.warmMount.push(await mountRun(warm));
    // The new processes and the long-running edge take turns going first, so that what a round's
    // earlier runs leave behind (pages still being written back) falls on each in turn.
    const coldRuns = variants.map(([name, bin]) => async () => {
      await withColdEdge(upstream, bin, async (edge) => {
        const t0 = performance.now();
        const [cpu0, relayCpu0] = [cpuSeconds(edge.pid), process.cpuUsage()];
        const first = await timedGet(bootstrapUrl(edge));
        samples[`${name}:bootstrap`].push(first.seconds);
        samples[`${name}:cpu`].push(cpuSeconds(edge.pid) - cpu0);
        const relayCpu = process.cpuUsage(relayCpu0);
        samples[`${name}:relayCpu`].push((relayCpu.user + relayCpu.system) / 1e6);
        (answered[name] ??= new Set()).add(first.params);
        samples[`${name}:codec`].push(await untilCodec(edge, t0));
      });
      samples[`${name}:mount`].push(await withColdEdge(upstream, bin, mountRun));
    });
    const runningRun = async () => {
      const repo = variantRepos[round + 1];
      const cpu0 = cpuSeconds(running.pid);
      samples.running.push((await timedGet(bootstrapUrl(running, repo))).seconds);
      samples.runningCpu.push(cpuSeconds(running.pid) - cpu0);
      await untilCodec(running, undefined, repo); // its other codec converted before the next measurement
    };
    for (const run of round % 2 === 0 ? [runningRun, ...coldRuns] : [...coldRuns, runningRun]) await run();
    console.error(`round ${round + 1}: ${Object.entries(samples).map(([k, v]) => `${k} ${v.at(-1).toFixed(2)} s`).join(", ")}`);
  }

  const m = Object.fromEntries(Object.entries(samples).map(([k, v]) => [k, median(v)]));
  const linkText = `${values.rate.replace(/gbit$/, " Gbit/s").replace(/mbit$/, " Mbit/s")}, ${LINK.latencyMs} ms each way`;
  const extra = (cold, warmS) => `${(cold - warmS).toFixed(2)} s = ${((cold - warmS) / m.transfer).toFixed(2)} × transfer`;
  const rows = [
    "| workload | upstream transfer alone (s) | conversion alone, blob cached (s) | warm edge (s) | cold edge (s) | cold − warm | goal: cold ≤ warm + 1.2 × transfer |",
    "|---|---:|---:|---:|---:|---|---|",
  ];
  for (const [name] of variants) {
    const label = name === "cold edge" ? "" : " (baseline build)";
    const params = [...answered[name]].join(", ");
    for (const [workload, warmKey] of [["bootstrap", "warmBootstrap"], ["mount", "warmMount"]]) {
      const cold = m[`${name}:${workload}`];
      const what = workload === "bootstrap" ? `image bootstrap (lazy API), first answer: ${params}` : "mount + python3 workload";
      rows.push(`| ${what}${label} | ${m.transfer.toFixed(2)} | ${m.convertOnly.toFixed(2)} | ${m[warmKey].toFixed(2)} | ${cold.toFixed(2)} | ${extra(cold, m[warmKey])} | ${cold <= m[warmKey] + 1.2 * m.transfer ? "met" : "not met"} |`);
    }
    rows.push(`| image bootstrap with ${CODEC} (asked again every 0.1 s)${label} | ${m.transfer.toFixed(2)} | | ${m.warmBootstrap.toFixed(2)} | ${m[`${name}:codec`].toFixed(2)} | ${extra(m[`${name}:codec`], m.warmBootstrap)} | |`);
  }
  rows.push(`| image bootstrap, a long-running edge meeting an image it has not seen | ${m.transfer.toFixed(2)} | | ${m.warmBootstrap.toFixed(2)} | ${m.running.toFixed(2)} | ${extra(m.running, m.warmBootstrap)} | ${m.running <= m.warmBootstrap + 1.2 * m.transfer ? "met" : "not met"} |`);
  const cpuRows = [
    "| CPU seconds (user + system) until the first bootstrap answer | median |",
    "|---|---:|",
    `| the edge, conversion alone (blob cached) | ${m.convertOnlyCpu.toFixed(2)} |`,
    `| the long-running edge, cold image | ${m.runningCpu.toFixed(2)} |`,
    ...variants.flatMap(([name]) => {
      const label = name === "cold edge" ? "" : " (baseline build)";
      return [`| the edge, cold${label} | ${m[`${name}:cpu`].toFixed(2)} |`, `| the link relay, during that cold edge${label} | ${m[`${name}:relayCpu`].toFixed(2)} |`];
    }),
  ];
  const load = (l) => l.map((x) => x.toFixed(1)).join(" / ");
  const command = `node bench/cold-edge.mjs --write --rounds ${ROUNDS} --rate ${values.rate} --latency ${values.latency} --codec ${CODEC}${values.baseline ? " --baseline <build before>/bin/skiff.js" : ""}`;
  const body = `Machine: ${machine()}. Command: \`npm run build && ${command}\` (median of ${ROUNDS} rounds).
Load average (1 / 5 / 15 min) at the start: ${load(loadAtStart)}; at the end: ${load(loadavg())}, on ${cpus().length} cores.

The image of the cold-start section (Debian with ${PACKAGES.join(", ")}, one gzip layer of ${(gz.length / 1e6).toFixed(0)} MB,
${(layer.tarBytes / 1e6).toFixed(0)} MB uncompressed) in a Distribution registry on loopback; skiff reaches it through
bench/link-relay.mjs at ${linkText} (the upstream's own link). Upstream transfer alone: curl's
GET of the layer blob through that link, its body discarded (curl's \`time_total\`). Warm edge: a skiff that converted the image
before; cold edge: a new skiff process on an empty store, so its time includes fetching the
manifest, config and layer, verifying the digest, storing the blob and converting. The workloads:
the image bootstrap from the lazy API (chunk codec ${CODEC}, default chunk size), and the cold-start workload
(\`skiff mount --overlay --codec ${CODEC}\` on an empty chunk cache, then \`${WORKLOAD.slice(0, 2).join(" ")} "${WORKLOAD[2]}"\` in a chroot; time to its output),
the agent talking to skiff on loopback. Conversion alone: a new edge that pulled the layer through
its registry API first (not timed), then the time to its first bootstrap answer; converting while
downloading can't take less than the larger of that and the transfer. With \`--none-first\` (the
default), an edge asked for a codec other than none answers with its \`none\` conversion, made in
the one pass over the upstream, until the asked codec is converted from the stored blob; the last
row is the time until that answer. Every cold edge in the table but the last row's is a new
process, which also compiles and optimises its code during the conversion; the last row is an edge
that converted another image before (the same image with one small file more, under another
digest) and meets a new variant each round.

${rows.join("\n")}

The edge's CPU time is read from /proc for its process; the link relay runs in the bench's process,
and a real link would cost the edge's machine none of it.

${cpuRows.join("\n")}`;
  console.log(body);
  if (values.write) replaceSection(join(root, "docs", "benchmarks.md"), "cold-edge", "A cold edge against a warm one", body);
} finally {
  await finish();
}
