// A soak: mixed pulls and lazy reads against one long-running skiff, watching memory.
//   npm run bench:soak [-- --duration 10m] [--write]
// A Distribution registry and one `skiff serve` run on loopback; a new image of random content is
// pushed to the registry every --push-every, so skiff keeps fetching and converting instead of only
// serving its cache. The load, a few clients at a time, every answer checked:
//  - skopeo pulls (docker:// → dir:) of random images: the manifest and every blob against its digest;
//  - plain manifest, blob and blob-range GETs;
//  - the lazy API: a bootstrap (codec none or deflate-raw), then one random file's chunks by Range
//    on the layer's data blob or by chunk URL, each chunk and the whole file against their sha256;
//  - two `skiff mount` agents, each its own process, read by `sha256sum` children (never by this
//    process): one mounted for the whole run on a larger image with a small chunk cache, so that it
//    keeps fetching; one remounted every --remount-every on a recent image with a fresh cache.
// VmRSS of skiff and of the agents is sampled throughout; see `judge` for when memory is "flat".
// Exits 1 on any failed request or wrong byte, or on growth. Needs root (FUSE), docker-registry,
// skopeo and fuse3, and `npm run build`.
import { execFile, spawn } from "node:child_process";
import { createHash, randomBytes, randomInt } from "node:crypto";
import { existsSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { parseArgs, promisify } from "node:util";
import { gzipSync, inflateRawSync } from "node:zlib";
import { cpuSeconds, machine, median, replaceSection } from "./report.mjs";
import { pushBlob, requireTools, root, startRegistry, startSkiff } from "./servers.mjs";

const HELP = `Usage: node bench/soak.mjs [options]      (npm run bench:soak -- [options])

Mixed pulls and lazy reads against one skiff for a while, sampling its memory and the agents'.

  --duration T       how long the load runs: 60s, 10m, 1h (default 10m)
  --warmup T         left out of the verdict while caches fill (default duration/5, at most 2m)
  --sample T         memory sampling interval (default duration/120, from 1s to 5s)
  --push-every T     push a new image to the registry this often (default 20s)
  --remount-every T  lifetime of each mount of the remounted agent (default 45s)
  --write            also write the summary into docs/reliability.md (its "soak" section)
  -h, --help

Exit status 0 when every request succeeded and memory stayed flat, 1 otherwise, 2 on bad usage.`;

const MiB = 2 ** 20;
const REQUEST_TIMEOUT_MS = 60_000;
const MT = {
  manifest: "application/vnd.oci.image.manifest.v1+json",
  config: "application/vnd.oci.image.config.v1+json",
  layer: "application/vnd.oci.image.layer.v1.tar+gzip",
};
const run = promisify(execFile);
const sha256 = (bytes) => createHash("sha256").update(bytes).digest("hex");
const check = (condition, what) => {
  if (!condition) throw new Error(what);
};

function parseTime(text, flag) {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(text ?? "");
  if (!m || Number(m[1]) <= 0) throw new Error(`--${flag} must be like 60s, 10m or 1h, got ${JSON.stringify(text)}`);
  return Number(m[1]) * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] ?? "s"];
}

const clock = (ms) => `${Math.floor(ms / 60_000)}:${String(Math.floor(ms / 1000) % 60).padStart(2, "0")}`;
const mib = (bytes) => (bytes == null ? "–" : `${(bytes / MiB).toFixed(0)} MiB`);

let opts;
try {
  const { values } = parseArgs({
    options: {
      duration: { type: "string", default: "10m" },
      warmup: { type: "string" },
      sample: { type: "string" },
      "push-every": { type: "string", default: "20s" },
      "remount-every": { type: "string", default: "45s" },
      write: { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    console.log(HELP);
    process.exit(0);
  }
  const durationMs = parseTime(values.duration, "duration");
  const warmupMs = values.warmup ? parseTime(values.warmup, "warmup") : Math.min(120_000, durationMs / 5);
  if (warmupMs >= durationMs) throw new Error("--warmup must be shorter than --duration");
  opts = {
    ...values,
    durationMs,
    warmupMs,
    // The windows compared: a minute each, or a third of what follows the warm-up in a short run.
    windowMs: Math.min(60_000, (durationMs - warmupMs) / 3),
    sampleMs: values.sample ? parseTime(values.sample, "sample") : Math.min(5000, Math.max(1000, durationMs / 120)),
    pushEveryMs: parseTime(values["push-every"], "push-every"),
    remountEveryMs: parseTime(values["remount-every"], "remount-every"),
  };
  if (opts.sampleMs * 3 > opts.windowMs) throw new Error(`--sample must be at most a third of the ${opts.windowMs / 1000} s windows compared`);
} catch (err) {
  process.stderr.write(`soak: ${err.message} (see --help)\n`);
  process.exit(2);
}
requireTools("docker-registry", "skopeo", "fusermount", "sha256sum", "tar");
if (process.getuid?.() !== 0) throw new Error("bench:soak needs root (FUSE mounts)");
const { Bootstrap } = await import(join(root, "dist", "src", "format", "decode.js"));

// ---- Progress and counts ----

const tty = process.stderr.isTTY;
let statusLine = "";
function note(message) {
  process.stderr.write(`${tty ? "\r\x1b[K" : ""}${message}\n${tty ? statusLine : ""}`);
}
function status(line) {
  statusLine = line;
  if (tty) process.stderr.write(`\r\x1b[K${line}`);
}

/** kind → { ok, errors, bytes }: what was requested and checked, and what failed. */
const counts = new Map();
const errorsSeen = [];
const entry = (kind) => counts.get(kind) ?? counts.set(kind, { ok: 0, errors: 0, bytes: 0 }).get(kind);
function ok(kind, bytes = 0) {
  entry(kind).ok++;
  entry(kind).bytes += bytes;
}
function failed(kind, err) {
  if (hard.signal.aborted) return; // interrupted: what was cut short is not a finding
  entry(kind).errors++;
  const cause = err?.cause?.code ? ` (${err.cause.code})` : ""; // fetch's "fetch failed" says no more
  const message = `${kind}: ${`${err?.message ?? err}${cause}`.replace(/\s+/g, " ").slice(0, 400)}`;
  if (errorsSeen.length >= 10) return; // the first ones are shown, the rest only counted
  errorsSeen.push(`${clock(Date.now() - t0)} ${message}`);
  note(`error at ${clock(Date.now() - t0)}: ${message}`);
}
const total = (field) => [...counts.values()].reduce((n, c) => n + c[field], 0);

// ---- Lifetime: `ending` stops new work at the deadline, `hard` cuts what is in flight ----

const ending = new AbortController();
const hard = new AbortController();
const running = () => !ending.signal.aborted;
const pause = (ms) => sleep(ms, undefined, { signal: ending.signal }).catch(() => {});
const work = await mkdtemp(join(tmpdir(), "skiff-bench-soak-"));
const cleanups = []; // run in reverse order by finish()
const mountpoints = new Set();
let t0 = Date.now();
let finishing;
let interrupted = false;

function finish() {
  finishing ??= (async () => {
    ending.abort();
    hard.abort();
    for (const c of cleanups.splice(0).reverse()) await c().catch((err) => note(`cleanup: ${err.message}`));
    for (const mnt of mountpoints) if (isMounted(mnt)) await run("fusermount", ["-uz", mnt]).catch(() => {});
    if ([...mountpoints].some(isMounted)) note(`left ${work} in place: something is still mounted under it`);
    else rmSync(work, { recursive: true, force: true });
  })();
  return finishing;
}
for (const signal of ["SIGINT", "SIGTERM"]) {
  process.on(signal, () => {
    if (finishing) return note("cleaning up, please wait");
    statusLine = "";
    note(`${signal}: stopping and cleaning up`);
    interrupted = true;
    void finish().then(() => process.exit(130));
  });
}

function isMounted(path) {
  return readFileSync("/proc/self/mounts", "utf8").split("\n").some((line) => line.split(" ")[1] === path);
}

/** CPU seconds a process has used (report.mjs), or NaN once it is gone. */
function cpuSecondsOrNaN(pid) {
  try {
    return cpuSeconds(pid);
  } catch {
    return NaN;
  }
}

/** Resident set size of a process in bytes (VmRSS), or null once it is gone. */
function rss(pid) {
  try {
    return Number(/^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"))[1]) * 1024;
  } catch {
    return null;
  }
}

// ---- Images: random content, pushed straight to the registry ----

/** A gzip tar layer of `count` files under `dir` (odd ones random bytes, even ones hex text that deflates). */
async function makeLayer(dir, count, maxBytes) {
  const stage = await mkdtemp(join(work, "layer-"));
  const files = [];
  await mkdir(join(stage, dir), { recursive: true });
  for (let j = 0; j < count; j++) {
    const size = randomInt(1024, maxBytes);
    const bytes = j % 2 ? randomBytes(size) : Buffer.from(randomBytes(size).toString("hex").slice(0, size));
    const path = `${dir}/f${j}.${j % 2 ? "bin" : "txt"}`;
    writeFileSync(join(stage, path), bytes);
    files.push({ path, size, sha256: sha256(bytes) });
  }
  const { stdout: tar } = await run("tar", ["-C", stage, "--sort=name", "--owner=0", "--group=0", "--mtime=@0", "-cf", "-", dir.split("/")[0]], {
    encoding: "buffer",
    maxBuffer: 1 << 28,
  });
  await rm(stage, { recursive: true, force: true });
  return { gz: gzipSync(tar, { level: 1 }), diffId: `sha256:${sha256(tar)}`, files };
}

/** Pushes config, layers and manifest; what the clients need to check their answers (no bytes kept). */
async function pushImage(name, tag, layers) {
  const config = Buffer.from(JSON.stringify({ architecture: "amd64", os: "linux", config: {}, rootfs: { type: "layers", diff_ids: layers.map((l) => l.diffId) } }));
  const blobs = [config, ...layers.map((l) => l.gz)].map((bytes) => ({ bytes, digest: `sha256:${sha256(bytes)}`, size: bytes.length }));
  for (const b of blobs) await pushBlob(registry.base, name, b.bytes, b.digest);
  const descriptor = (mediaType, b) => ({ mediaType, digest: b.digest, size: b.size });
  const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MT.manifest, config: descriptor(MT.config, blobs[0]), layers: blobs.slice(1).map((b) => descriptor(MT.layer, b)) }));
  const put = await fetch(`${registry.base}/v2/${name}/manifests/${tag}`, { method: "PUT", body: manifest, headers: { "Content-Type": MT.manifest } });
  check(put.status === 201, `manifest PUT ${name}:${tag}: ${put.status} ${await put.text()}`);
  return { name, tag, manifestDigest: `sha256:${sha256(manifest)}`, blobs: blobs.map((b) => ({ digest: b.digest, size: b.size })), files: layers.flatMap((l) => l.files) };
}

// Every image shares a base layer, as real ones do: skiff converts it once and must then confirm
// each new repository's right to it. The rest of each image is new.
const pool = [];
let pushed = 0;
async function pushNext(base) {
  const n = ++pushed;
  const layers = [base, await makeLayer(`soak/i${n}/a`, 4, 1.5 * MiB), await makeLayer(`soak/i${n}/b`, 4, 1.5 * MiB)];
  pool.push(await pushImage(`soak/app${n % 3}`, `v${n}`, layers));
  ok("image push", layers.reduce((s, l) => s + l.gz.length, 0));
}
/** Half the time one of the three newest images, else any. */
const pick = () => pool[pool.length - 1 - randomInt(Math.random() < 0.5 ? Math.min(3, pool.length) : pool.length)];

// ---- Clients ----

async function get(path, headers = {}) {
  const res = await fetch(`${skiff.base}${path}`, { headers, signal: AbortSignal.any([hard.signal, AbortSignal.timeout(REQUEST_TIMEOUT_MS)]) });
  return { status: res.status, headers: res.headers, body: Buffer.from(await res.arrayBuffer()) };
}

/**
 * Runs `body` again and again until the deadline, a pause between rounds. The body names the step
 * under way in `round.kind`, so that a throw is counted as an error of the step where it happened.
 */
async function repeat(kind, pauseMs, body) {
  while (running()) {
    const round = { kind };
    await body(round).catch((err) => failed(round.kind, err));
    await pause(pauseMs);
  }
}

async function skopeoPull(skopeo) {
  const img = pick();
  const dest = join(work, `pull-${randomBytes(4).toString("hex")}`);
  try {
    const src = `docker://${new URL(skiff.base).host}/${img.name}:${img.tag}`;
    await run("skopeo", ["--policy", skopeo.policy, "copy", "--quiet", "--src-tls-verify=false", "--src-no-creds", src, `dir:${dest}`], {
      env: skopeo.env,
      timeout: 120_000,
      signal: hard.signal,
    });
    check(sha256(await readFile(join(dest, "manifest.json"))) === img.manifestDigest.slice(7), `${src}: manifest digest differs`);
    let bytes = 0;
    for (const b of img.blobs) {
      const blob = await readFile(join(dest, b.digest.slice(7)));
      check(sha256(blob) === b.digest.slice(7), `${src}: blob ${b.digest} differs`);
      bytes += blob.length;
    }
    ok("skopeo pull", bytes);
  } finally {
    await rm(dest, { recursive: true, force: true });
  }
}

async function plainGets(round) {
  const img = pick();
  round.kind = "manifest GET";
  const m = await get(`/v2/${img.name}/manifests/${img.tag}`, { Accept: MT.manifest });
  check(m.status === 200 && sha256(m.body) === img.manifestDigest.slice(7), `manifest ${img.name}:${img.tag}: ${m.status}, digest ${m.status === 200 ? "differs" : "-"}`);
  ok("manifest GET", m.body.length);
  const blob = img.blobs[randomInt(img.blobs.length)];
  const path = `/v2/${img.name}/blobs/${blob.digest}`;
  round.kind = "blob GET";
  const whole = await get(path);
  check(whole.status === 200 && sha256(whole.body) === blob.digest.slice(7), `GET ${path}: ${whole.status}, digest differs`);
  ok("blob GET", whole.body.length);
  const start = randomInt(blob.size);
  const end = Math.min(blob.size - 1, start + randomInt(256 * 1024));
  round.kind = "blob range GET";
  const part = await get(path, { Range: `bytes=${start}-${end}` });
  check(part.status === 206 && part.body.equals(whole.body.subarray(start, end + 1)), `GET ${path} bytes=${start}-${end}: ${part.status}, bytes differ`);
  ok("blob range GET", part.body.length);
}

async function bootstrapOf(img, codec) {
  const path = `/v2/${img.name}/_skiff/bootstrap/${img.tag}?codec=${codec}`;
  for (let round = 0; round < 60 && !hard.signal.aborted; round++) {
    const res = await get(path);
    if (res.status === 202) {
      await sleep(Number(res.headers.get("retry-after") ?? 1) * 1000, undefined, { signal: hard.signal });
      continue;
    }
    check(res.status === 200, `GET ${path}: ${res.status} ${res.body.toString().slice(0, 200)}`);
    check(`sha256:${sha256(res.body)}` === res.headers.get("docker-content-digest"), `GET ${path}: body does not match Docker-Content-Digest`);
    check(res.headers.get("skiff-manifest-digest") === img.manifestDigest, `GET ${path}: built from another manifest`);
    ok("bootstrap GET", res.body.length);
    return { bootstrap: Bootstrap.decode(new Uint8Array(res.body)), params: res.headers.get("skiff-params") };
  }
  throw new Error(`GET ${path}: still converting`);
}

/** One random file through the lazy API, chunk by chunk, alternating data ranges and chunk URLs. */
async function lazyRead(round) {
  const img = pick();
  const codec = Math.random() < 0.5 ? "none" : "deflate-raw";
  round.kind = "bootstrap GET";
  const { bootstrap, params } = await bootstrapOf(img, codec);
  const file = img.files[randomInt(img.files.length)];
  round.kind = "chunk GET";
  const inode = bootstrap.lookup(file.path);
  check(inode !== null, `${img.name}:${img.tag}: no ${file.path} in the bootstrap`);
  const parts = [];
  for (const c of bootstrap.chunks(inode)) {
    const hex = Buffer.from(c.digest).toString("hex");
    const layer = `/v2/${img.name}/_skiff/layers/${bootstrap.blob(c.blob).layerDigest}/${params}`;
    const byRange = Math.random() < 0.5;
    const res = byRange
      ? await get(`${layer}/data`, { Range: `bytes=${c.storedOffset}-${c.storedOffset + c.storedSize - 1}` })
      : await get(`${layer}/chunks/${hex}.${c.compressed ? codec : "none"}`);
    check(res.status === (byRange ? 206 : 200), `chunk ${hex} of ${layer}: ${res.status}`);
    const data = c.compressed ? inflateRawSync(res.body) : res.body;
    check(data.length === c.size && sha256(data) === hex, `chunk ${hex} of ${layer}: bytes differ`);
    ok("chunk GET", res.body.length);
    parts.push(data);
  }
  round.kind = "lazy file read";
  check(sha256(Buffer.concat(parts)) === file.sha256, `${img.name}:${img.tag} ${file.path}: file differs`);
  ok("lazy file read", file.size);
}

// ---- Node agents: separate processes, read only by other processes ----

const agents = new Set(); // running, for the cleanup

async function startAgent(img, extra) {
  const dir = await mkdtemp(join(work, "agent-"));
  const mnt = join(dir, "mnt");
  await mkdir(mnt);
  mountpoints.add(mnt);
  const args = [join(root, "bin", "skiff.js"), "mount", `${skiff.base}/${img.name}:${img.tag}`, mnt, "--cache", join(dir, "cache"), "--stats", join(dir, "stats.json"), ...extra];
  const child = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "pipe"] });
  let stderr = "";
  child.stderr.on("data", (d) => (stderr = (stderr + d).slice(-2000)));
  const agent = { child, dir, mnt, img, peak: 0 };
  agents.add(agent);
  try {
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`mount did not come up in 60 s: ${stderr}`)), 60_000);
      child.stdout.on("data", (d) => String(d).includes("mounted ") && (clearTimeout(timer), resolve()));
      child.once("exit", (code) => (clearTimeout(timer), reject(new Error(`skiff mount exited ${code}: ${stderr}`))));
    });
  } catch (err) {
    await stopAgent(agent);
    throw err;
  }
  return agent;
}

/** SIGTERM (the agent unmounts itself), SIGKILL after 15 s, then a lazy unmount if anything is left; its stats. */
async function stopAgent(agent) {
  const { child, mnt, dir } = agent;
  const exited = () => child.exitCode !== null || child.signalCode !== null;
  if (!exited()) {
    const gone = new Promise((r) => child.once("exit", r));
    child.kill("SIGTERM");
    if ((await Promise.race([gone, sleep(15_000, "timeout")])) === "timeout") {
      child.kill("SIGKILL");
      await gone;
    }
  }
  agents.delete(agent);
  if (isMounted(mnt)) await run("fusermount", ["-uz", mnt]).catch(() => {});
  if (isMounted(mnt)) return null;
  mountpoints.delete(mnt);
  const stats = existsSync(join(dir, "stats.json")) ? JSON.parse(readFileSync(join(dir, "stats.json"), "utf8")) : null;
  await rm(dir, { recursive: true, force: true });
  return stats;
}

/** A random file of the agent's image, hashed by a `sha256sum` child reading through the mount. */
async function readThrough(agent, kind) {
  check(agent.child.exitCode === null && agent.child.signalCode === null, "the agent has exited");
  const file = agent.img.files[randomInt(agent.img.files.length)];
  const { stdout } = await run("sha256sum", [join(agent.mnt, file.path)], { timeout: REQUEST_TIMEOUT_MS, signal: hard.signal });
  check(stdout.split(" ")[0] === file.sha256, `${file.path} through the mount: bytes differ`);
  ok(kind, file.size);
}

/** An agent's fetch errors (retries included) count as errors: on loopback there should be none. */
function agentStats(stats, kind) {
  if (stats?.errors > 0) failed(kind, new Error(`the agent counted ${stats.errors} failed fetch attempts`));
  return stats;
}

const lifetimes = []; // the remounted agent's mounts: peak RSS and stats of each
let remounted = null; // its current mount
async function remounts() {
  for (let n = 0; running(); n++) {
    const img = pool[pool.length - 1 - randomInt(Math.min(3, pool.length))];
    let agent;
    try {
      agent = await startAgent(img, ["--codec", n % 2 ? "deflate-raw" : "none"]);
      ok("mount");
      remounted = agent;
      const until = Date.now() + opts.remountEveryMs;
      while (running() && Date.now() < until) {
        await readThrough(agent, "mount read").catch((err) => failed("mount read", err));
        await pause(400);
      }
    } catch (err) {
      failed("mount", err);
    } finally {
      remounted = null;
      if (agent) lifetimes.push({ peak: agent.peak, stats: agentStats(await stopAgent(agent), "mount") });
    }
  }
}

// ---- Memory: samples and the verdict ----

const samples = []; // { t, skiff, long, remounted } (bytes; t in ms since the load started)
let skiffExited = false;
function takeSample() {
  if (!skiffExited && (skiff.child.exitCode !== null || skiff.child.signalCode !== null)) {
    skiffExited = true;
    failed("skiff serve", new Error(`exited (${skiff.child.exitCode ?? skiff.child.signalCode})`));
  }
  const s = { t: Date.now() - t0, skiff: rss(skiff.child.pid), long: rss(longAgent.child.pid), remounted: remounted && rss(remounted.child.pid) };
  samples.push(s);
  if (remounted && s.remounted) remounted.peak = Math.max(remounted.peak, s.remounted);
  const left = Math.max(0, opts.durationMs - s.t);
  status(`soak ${clock(s.t)}/${clock(opts.durationMs)}  skiff ${mib(s.skiff)}  agents ${mib(s.long)} / ${mib(s.remounted)}  requests ${total("ok")}  errors ${total("errors")}  images ${pool.length}${left === 0 ? "  (finishing)" : ""}`);
  if (!tty && samples.length % Math.round(60_000 / opts.sampleMs) === 0) process.stderr.write(`${statusLine}\n`);
}

/**
 * Memory is flat when it does not keep growing after the warm-up: the median of the last window
 * and a least-squares line through every sample after the warm-up both rise by at most
 * 15 % + 8 MiB over the median of the first window after the warm-up. Medians ignore a GC's
 * sawtooth; the fit uses every sample, so a slow steady climb shows even inside the allowance's noise.
 */
function judge(key) {
  const series = samples.filter((s) => s[key] != null).map((s) => ({ t: s.t, v: s[key] }));
  const end = samples.at(-1).t;
  if (series.length === 0 || series.at(-1).t < end - opts.windowMs) return null; // the process did not last
  const after = series.filter((s) => s.t >= opts.warmupMs);
  const first = median(after.filter((s) => s.t < opts.warmupMs + opts.windowMs).map((s) => s.v));
  const last = median(after.filter((s) => s.t >= end - opts.windowMs).map((s) => s.v));
  const mt = after.reduce((n, s) => n + s.t, 0) / after.length;
  const mv = after.reduce((n, s) => n + s.v, 0) / after.length;
  const slope = after.reduce((n, s) => n + (s.t - mt) * (s.v - mv), 0) / after.reduce((n, s) => n + (s.t - mt) ** 2, 0); // bytes per ms
  const allowance = 0.15 * first + 8 * MiB;
  const flat = last - first <= allowance && slope * (end - opts.warmupMs) <= allowance;
  return { start: series[0].v, warm: after[0].v, first, last, max: Math.max(...series.map((s) => s.v)), slopeMiBPerMin: (slope * 60_000) / MiB, flat };
}

async function skiffCounters() {
  const text = await fetch(`${skiff.metricsBase}/metrics`).then((res) => res.text(), () => null);
  if (text === null) return null;
  const sum = (name) => text.split("\n").filter((l) => l.startsWith(`${name}{`) || l.startsWith(`${name} `)).reduce((n, l) => n + Number(l.split(" ").pop()), 0);
  return { requests: sum("skiff_http_requests_total"), conversions: sum("skiff_conversions_finished_total"), upstreamBytes: sum("skiff_upstream_bytes_total") };
}

// ---- The run ----

let registry;
let skiff;
let longAgent;
let exitCode = 1;
try {
  registry = await startRegistry(work);
  cleanups.push(registry.stop);
  skiff = await startSkiff("node", work, registry.base);
  cleanups.push(skiff.stop);

  // skopeo sees only its command line: its own policy, no registries.conf, no auth file.
  const skopeo = { policy: join(work, "policy.json"), env: { ...process.env, CONTAINERS_REGISTRIES_CONF: join(work, "registries.conf"), REGISTRY_AUTH_FILE: join(work, "auth.json"), DOCKER_CONFIG: join(work, "docker") } };
  writeFileSync(skopeo.policy, JSON.stringify({ default: [{ type: "insecureAcceptAnything" }] }));
  writeFileSync(skopeo.env.CONTAINERS_REGISTRIES_CONF, "");

  note("building and pushing the first images");
  const base = await makeLayer("soak/base", 6, 1 * MiB);
  // The long-lived agent's image: ~30 MB of files against an 8 MiB chunk cache (and the agent's
  // 16 MiB of recent chunks in memory), so its random reads keep missing and fetching.
  const bigLayers = [base];
  for (const part of ["a", "b", "c"]) bigLayers.push(await makeLayer(`soak/big/${part}`, 6, 3 * MiB));
  const big = await pushImage("soak/big", "1", bigLayers);
  await pushNext(base);
  longAgent = await startAgent(big, ["--cache-size", "8m"]);
  cleanups.push(() => Promise.all([...agents].map(stopAgent)));

  note(`load for ${clock(opts.durationMs)} (warm-up ${clock(opts.warmupMs)}), sampling every ${opts.sampleMs / 1000} s; skiff is pid ${skiff.child.pid}`);
  t0 = Date.now();
  const cpuAtStart = cpuSecondsOrNaN(skiff.child.pid);
  takeSample();
  const sampler = setInterval(takeSample, opts.sampleMs);
  cleanups.push(async () => clearInterval(sampler));
  const loops = [
    repeat("image push", opts.pushEveryMs, () => pushNext(base)),
    repeat("skopeo pull", 2000, () => skopeoPull(skopeo)),
    repeat("manifest GET", 600, plainGets),
    repeat("manifest GET", 600, plainGets),
    repeat("bootstrap GET", 300, lazyRead),
    repeat("bootstrap GET", 300, lazyRead),
    repeat("long mount read", 500, () => readThrough(longAgent, "long mount read")),
    remounts(),
  ];
  await pause(opts.durationMs);
  ending.abort();
  clearInterval(sampler);
  takeSample();
  const skiffCpu = cpuSecondsOrNaN(skiff.child.pid) - cpuAtStart;
  // Let the rounds in flight finish (each is bounded by its timeouts), so none is counted as failed.
  await Promise.all(loops);
  if (interrupted) throw new Error("interrupted");
  agentStats(await stopAgent(longAgent), "long mount read");
  const counters = await skiffCounters();
  if (tty) process.stderr.write("\n");

  const mem = { skiff: judge("skiff"), long: judge("long") };
  const peaks = lifetimes.map((l) => (l.peak / MiB).toFixed(0));
  const errors = total("errors");
  const flat = Boolean(mem.skiff?.flat && mem.long?.flat);
  const minutes = (ms) => `${+(ms / 60_000).toFixed(2)} min`;
  const row = (label, m) =>
    !m ? `| ${label} | it exited during the run ||||||| **failed** |` : `| ${label} | ${mib(m.start)} | ${mib(m.warm)} | ${mib(m.first)} | ${mib(m.last)} | ${mib(m.max)} | ${m.slopeMiBPerMin.toFixed(2)} | ${m.flat ? "flat" : "**growing**"} |`;
  const body = `Machine: ${machine()}. Command: \`npm run bench:soak -- --duration ${opts.duration} --write\`.

For ${minutes(opts.durationMs)}, against one \`skiff serve\` in front of a Distribution registry on loopback: a new
image pushed to the registry every ${opts.pushEveryMs / 1000} s (a shared base layer and two new layers of random files; ${pool.length} images
in all), one \`skopeo copy\` client, two clients of plain manifest, blob and blob-range GETs, two of
the lazy API (a bootstrap, then a random file's chunks by data range or chunk URL, codec none or
deflate-raw), and two \`skiff mount\` agents read with \`sha256sum\`: one mounted for the whole run on a
${(big.files.reduce((n, f) => n + f.size, 0) / 1e6).toFixed(0)} MB image with an 8 MiB chunk cache, one remounted every ${opts.remountEveryMs / 1000} s on a recent image with a fresh cache. Every
answer was checked against its digest.${
    counters
      ? ` skiff converted ${counters.conversions} layers and took ${(counters.upstreamBytes / 1e6).toFixed(0)} MB from the
registry; it answered ${counters.requests} requests and used ${skiffCpu.toFixed(0)} CPU-seconds (${((100 * skiffCpu * 1000) / samples.at(-1).t).toFixed(0)} % of one core).`
      : ""
  }

| requests | done | errors | MB checked |
|---|---:|---:|---:|
${[...counts].map(([kind, c]) => `| ${kind} | ${c.ok} | ${c.errors} | ${(c.bytes / 1e6).toFixed(1)} |`).join("\n")}
| **all** | ${total("ok")} | ${total("errors")} | ${(total("bytes") / 1e6).toFixed(0)} |

Resident memory (VmRSS), sampled every ${opts.sampleMs / 1000} s (${samples.length} samples); warm-up ${minutes(opts.warmupMs)}; the windows
compared are the first and the last ${minutes(opts.windowMs)} after it:

| process | start | after warm-up | median, first window | median, last window | largest | slope after warm-up (MiB/min) | verdict |
|---|---:|---:|---:|---:|---:|---:|---|
${row("skiff serve", mem.skiff)}
${row("agent mounted all along", mem.long)}

The remounted agent, largest RSS of each of its ${lifetimes.length} mounts in turn (MiB): ${peaks.join(", ")}.

**Verdict: ${flat ? "flat" : !mem.skiff || !mem.long ? "a process exited" : "memory grows"}, ${errors ? `${errors} errors` : "no errors"}.** Memory counts as flat when, after the
warm-up, both the median of the last window and a least-squares line through every sample rise
by at most 15 % + 8 MiB over the median of the first window.${errors ? `\n\nThe first errors:\n\n${errorsSeen.map((e) => `- ${e}`).join("\n")}` : ""}`;
  console.log(body);
  if (opts.write) replaceSection(join(root, "docs", "reliability.md"), "soak", "Soak: mixed pulls and lazy reads, memory", body);
  exitCode = errors === 0 && flat ? 0 : 1;
} catch (err) {
  if (!interrupted) note(`soak: ${err.stack ?? err}`);
} finally {
  await finish();
}
process.exit(interrupted ? 130 : exitCode);
