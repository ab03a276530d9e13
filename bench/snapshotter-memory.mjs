// Node memory with many images mounted: `npm run bench:snapshotter-memory [-- --write] [--images 20]`.
// Goal: with 20 images mounted, all node-side processes together (`skiff snapshotter`, its mounts
// daemon and FUSE keeper) stay at or below 400 MiB RSS.
//
// A Distribution registry and a skiff proxy run on loopback. 20 distinct images of real files are
// built from this machine's /usr (3 gzip layers each: a Python standard library, a share of Python
// packages, and a slice of /usr/share/doc with an app file; every layer of every image differs) and
// pushed with skopeo; the proxy converts each once before anything is measured. Then
// `skiff snapshotter` is driven over its gRPC socket as containerd's CRI plugin and unpacker drive
// it: per image, Prepare of every layer with the CRI labels (served lazily: ALREADY_EXISTS), a
// container snapshot on top whose overlay is mounted, walked (`find`, a stat of every entry) and
// partly read (a few hundred files, about 15 % of the image's bytes), as a container start reads
// its image. Everything stays mounted. VmRSS and VmHWM of the processes (/proc/PID/status) after
// the first image and after all of them. Needs root (FUSE and overlay mounts), docker-registry and
// skopeo (npm test installs them).
import { execFileSync, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { request } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs, promisify } from "node:util";
import { gzip } from "node:zlib";
import { credentials, makeGenericClientConstructor } from "@grpc/grpc-js";
import { writeLayout } from "./oci-layout.mjs";
import { machine, replaceSection } from "./report.mjs";
import { requireTools, root, startRegistry, startSkiff } from "./servers.mjs";

const { values } = parseArgs({ options: { write: { type: "boolean", default: false }, images: { type: "string", default: "20" } } });
const IMAGES = Number(values.images);
if (!Number.isInteger(IMAGES) || IMAGES < 1 || IMAGES > 100) throw new Error("--images must be 1 to 100");
const GOAL_MIB = 400;
const READ_SHARE = 0.15; // of an image's file bytes, read by its "container start"
const MAX_READ_FILES = 600;
const TARGET = "containerd.io/snapshot.ref";
const ALREADY_EXISTS = 6;
for (const dir of ["/usr/lib/python3/dist-packages", "/usr/share/doc"]) if (!lstatSync(dir, { throwIfNoEntry: false })?.isDirectory()) throw new Error(`${dir} is missing: the images are built from it`);
requireTools("docker-registry", "skopeo", "tar", "find", "mount", "umount", "pgrep");
if (process.getuid?.() !== 0) throw new Error("bench:snapshotter-memory needs root (FUSE and overlay mounts)");

const { SNAPSHOTS_SERVICE } = await import(join(root, "dist", "node-agent", "src", "snapshotter", "snapshots-api.js"));
const { fetchBootstrap } = await import(join(root, "dist", "src", "client", "lazy-api.js"));

const work = mkdtempSync(join(tmpdir(), "skiff-bench-snapmem-"));
const snapRoot = join(work, "root");
const socket = join(work, "snap.sock");
const cleanups = [];
const overlays = [];
let client;
process.once("SIGINT", () => void finish().then(() => process.exit(130)));

const sha256 = (bytes) => `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const mib = (bytes) => bytes / 2 ** 20;

// ---- the images ----

/** Keeps about one name in `mod`, a different share for every image and layer. */
const chosen = (salt, image, name, mod) => createHash("sha256").update(`${salt}:${image}:${name}`).digest()[0] % mod === 0;

/** Every path under the given ones (relative to /), parents first, directories included. */
function walk(paths) {
  const out = [];
  const visit = (rel) => {
    out.push(rel);
    for (const d of readdirSync(join("/", rel), { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
      if (d.isDirectory()) visit(`${rel}/${d.name}`);
      else if (d.isFile() || d.isSymbolicLink()) out.push(`${rel}/${d.name}`);
    }
  };
  for (const p of paths) {
    const st = lstatSync(join("/", p));
    if (st.isDirectory()) visit(p);
    else if (st.isFile() || st.isSymbolicLink()) out.push(p);
  }
  return out;
}

/** A gzip'd tar of host paths (with their parent directories) plus one small file of our own. */
async function layer(dir, hostDirs, paths, extra) {
  const parents = [];
  for (const d of hostDirs) {
    const parts = d.split("/");
    for (let i = 1; i <= parts.length; i++) if (!parents.includes(parts.slice(0, i).join("/"))) parents.push(parts.slice(0, i).join("/"));
  }
  const list = join(dir, "list");
  writeFileSync(list, [...parents, ...walk(paths)].join("\0"));
  const staging = join(dir, "staging");
  mkdirSync(join(staging, extra.dir), { recursive: true });
  writeFileSync(join(staging, extra.dir, extra.name), extra.text);
  const tarFile = join(dir, "layer.tar");
  const common = ["--owner=0", "--group=0", "--numeric-owner", "--mtime=@1700000000"];
  execFileSync("tar", ["-C", "/", ...common, "--no-recursion", "--null", "-T", list, "-cf", tarFile]);
  execFileSync("tar", ["-C", staging, ...common, "-rf", tarFile, extra.dir]);
  const tar = readFileSync(tarFile);
  rmSync(dir, { recursive: true, force: true });
  return { gz: await promisify(gzip)(tar, { level: 6 }), diffId: sha256(tar), tarBytes: tar.length };
}

/** The host's Python standard library (the newest `usr/lib/python3.N`). */
function pythonStdlib() {
  const versions = readdirSync("/usr/lib").filter((n) => /^python3\.\d+$/.test(n)).sort((a, b) => Number(a.slice(8)) - Number(b.slice(8)));
  if (versions.length === 0) throw new Error("no /usr/lib/python3.N on this host (Debian: apt-get install python3)");
  return `usr/lib/${versions.at(-1)}`;
}

/** Image `i`: three layers of real files, each a different selection, each with a file naming the image. */
async function buildImage(i) {
  const tag = String(i).padStart(2, "0");
  const stdlib = pythonStdlib();
  const packages = "usr/lib/python3/dist-packages";
  const docs = "usr/share/doc";
  const names = (d) => readdirSync(join("/", d)).sort();
  const dir = (n) => mkdtempSync(join(work, `build-${tag}-${n}-`));
  const os = await layer(
    dir("os"),
    [stdlib],
    names(stdlib).filter((n) => !n.startsWith("config-") && !chosen("os", i, n, 8)).map((n) => `${stdlib}/${n}`),
    { dir: "etc", name: "skiff-bench-image", text: `image ${tag}\n` },
  );
  const deps = await layer(
    dir("deps"),
    [packages],
    names(packages).filter((n) => !chosen("deps", i, n, 2)).map((n) => `${packages}/${n}`),
    { dir: "etc/skiff-bench", name: `deps-${tag}`, text: `deps of image ${tag}\n` },
  );
  const app = await layer(
    dir("app"),
    [docs],
    names(docs).filter((n) => chosen("app", i, n, 8)).map((n) => `${docs}/${n}`),
    { dir: "app", name: "main.py", text: `print("image ${tag}")\n`.repeat(64) },
  );
  return [os, deps, app];
}

// ---- processes and memory ----

function stopChild(child, ms = 10_000) {
  return new Promise((done) => {
    if (child.exitCode !== null || child.signalCode !== null) return done();
    const timer = setTimeout(() => (child.kill("SIGKILL"), done()), ms);
    child.once("exit", () => (clearTimeout(timer), done()));
    child.kill("SIGTERM");
  });
}

/** The mounts daemons (`flag` --mounts-daemon) or FUSE keepers (--fuse-keeper) started for our root, found by their argv. */
function pidsOf(flag) {
  try {
    return execFileSync("pgrep", ["-f", "--", `--root ${snapRoot} .*${flag}`], { encoding: "utf8" }).trim().split("\n").filter(Boolean).map(Number);
  } catch {
    return []; // pgrep found none
  }
}
const daemonPids = () => pidsOf("--mounts-daemon");
const keeperPids = () => pidsOf("--fuse-keeper");

function memoryOf(pid) {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kib = (field) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? NaN);
  const rollup = readFileSync(`/proc/${pid}/smaps_rollup`, "utf8");
  const rkib = (field) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(rollup)?.[1] ?? NaN);
  return { rss: kib("VmRSS") * 1024, hwm: kib("VmHWM") * 1024, anon: rkib("Anonymous") * 1024, threads: Number(/^Threads:\s+(\d+)/m.exec(status)?.[1]), name: /^Name:\s+(\S+)/m.exec(status)?.[1] };
}

/** The mounts daemon's own account: its mounts, the chunk cache, bytes fetched from the proxy. */
function daemonStatus() {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath: join(snapRoot, "mounts.sock"), path: "/status", timeout: 10_000, agent: false }, (res) => {
      let text = "";
      res.on("data", (d) => (text += d));
      res.on("end", () => resolve(JSON.parse(text)));
    });
    req.on("timeout", () => req.destroy(new Error("mounts daemon: no status")));
    req.on("error", reject);
    req.end();
  });
}

async function sample(snapshotter) {
  const daemons = daemonPids();
  const keepers = keeperPids();
  if (daemons.length !== 1 || keepers.length !== 1) throw new Error(`expected one mounts daemon and one FUSE keeper, found ${daemons.length} and ${keepers.length}`);
  const status = await daemonStatus();
  return {
    snapshotter: memoryOf(snapshotter.pid),
    daemon: memoryOf(daemons[0]),
    keeper: memoryOf(keepers[0]),
    mounts: status.mounts.length,
    fetched: status.mounts.reduce((n, m) => n + m.bytesFetched, 0),
    cacheBytes: status.cache.bytes,
  };
}

function startSnapshotter(proxy) {
  const child = spawn(process.execPath, [join(root, "bin", "skiff.js"), "snapshotter", "--proxy", proxy, "--root", snapRoot, "--address", socket, "--metrics", "off"], { stdio: ["ignore", "pipe", "pipe"] });
  let log = "";
  child.stderr.on("data", (d) => (log = (log + d).slice(-20_000)));
  cleanups.push(async () => {
    await stopChild(child);
    // Stopped on purpose, the FUSE keeper unmounts the layers (the daemon just ends).
    for (const pid of [...daemonPids(), ...keeperPids()]) {
      try {
        process.kill(pid, "SIGTERM");
      } catch {
        // gone already
      }
    }
    for (let i = 0; i < 150 && daemonPids().length + keeperPids().length > 0; i++) await sleep(100);
    for (const pid of [...daemonPids(), ...keeperPids()]) process.kill(pid, "SIGKILL");
    // Whatever is still mounted under our root (a killed keeper leaves its FUSE mounts).
    const left = readFileSync("/proc/mounts", "utf8").split("\n").map((l) => l.split(" ")[1]).filter((m) => m?.startsWith(`${snapRoot}/`));
    for (const m of left.reverse()) execFileSync("umount", ["-l", m], { stdio: "ignore" });
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`snapshotter did not start: ${log}`)), 20_000);
    child.stdout.on("data", (d) => {
      if (String(d).includes("skiff snapshotter listening on")) {
        clearTimeout(timer);
        resolve({ child, log: () => log });
      }
    });
    child.once("exit", (code) => (clearTimeout(timer), reject(new Error(`snapshotter exited ${code}: ${log}`))));
  });
}

// ---- containerd's side of the gRPC API ----

function connect() {
  const Ctor = makeGenericClientConstructor(SNAPSHOTS_SERVICE, "Snapshots");
  client = new Ctor(`unix://${socket}`, credentials.createInsecure());
}

const call = (method, req) => new Promise((resolve, reject) => client[method](req, { deadline: Date.now() + 120_000 }, (err, res) => (err ? reject(err) : resolve(res))));

function list(filters) {
  return new Promise((resolve, reject) => {
    const infos = [];
    const stream = client.List({ filters }, { deadline: Date.now() + 60_000 });
    stream.on("data", (page) => infos.push(...page.info));
    stream.on("end", () => resolve(infos));
    stream.on("error", reject);
  });
}

let keys = 0;

/** Prepares the image's layers as containerd's unpacker does (each served lazily), then a container's rootfs. */
async function prepareImage(image) {
  let parent = "";
  let chain = "";
  const digests = image.layers.map((l) => l.digest);
  for (const [n, l] of image.layers.entries()) {
    chain = chain ? sha256(Buffer.from(`${chain} ${l.diffId}`)) : l.diffId;
    const labels = {
      [TARGET]: chain,
      "containerd.io/snapshot/cri.image-ref": image.ref,
      "containerd.io/snapshot/cri.manifest-digest": image.manifest,
      "containerd.io/snapshot/cri.layer-digest": l.digest,
      "containerd.io/snapshot/cri.image-layers": digests.slice(n).join(","),
    };
    const key = `k8s.io/${++keys}/extract-${keys} ${chain}`;
    const code = await call("Prepare", { key, parent, labels }).then(
      () => 0,
      (err) => err.code,
    );
    if (code !== ALREADY_EXISTS) throw new Error(`${image.ref} layer ${n}: Prepare answered ${code}, not ALREADY_EXISTS (not lazy)`);
    const [committed] = await list([`labels."${TARGET}"==${chain},parent=="${parent}"`]);
    if (!committed) throw new Error(`${image.ref} layer ${n}: no committed snapshot for ${chain}`);
    parent = committed.name;
  }
  const { mounts } = await call("Prepare", { key: `k8s.io/${++keys}/container-${image.tag}`, parent, labels: {} });
  const target = join(work, "rootfs", image.tag);
  mkdirSync(target, { recursive: true });
  const [m] = mounts;
  execFileSync("mount", ["-t", m.type, m.source, "-o", m.options.join(","), target]);
  overlays.push(target);
  return target;
}

/** A container start's reads: a walk of the tree (a stat of every entry), then about READ_SHARE of its bytes. */
function readLikeAContainer(rootfs, tag) {
  const lines = execFileSync("find", [rootfs, "-printf", "%y %s %P\\n"], { encoding: "utf8", maxBuffer: 1 << 28 }).trim().split("\n");
  const files = lines.filter((l) => l.startsWith("f ")).map((l) => {
    const [, size, ...path] = l.split(" ");
    return { size: Number(size), path: path.join(" ") };
  });
  const total = files.reduce((n, f) => n + f.size, 0);
  const order = files.map((f) => ({ f, key: createHash("sha256").update(`${tag}:${f.path}`).digest("hex") })).sort((a, b) => (a.key < b.key ? -1 : 1));
  let bytes = 0;
  let count = 0;
  for (const { f } of order) {
    if (bytes >= total * READ_SHARE || count >= MAX_READ_FILES) break;
    const data = readFileSync(join(rootfs, f.path));
    if (data.length !== f.size) throw new Error(`${f.path}: read ${data.length} bytes of ${f.size}`);
    bytes += data.length;
    count++;
  }
  return { entries: lines.length, files: files.length, totalBytes: total, readFiles: count, readBytes: bytes };
}

async function finish() {
  for (const target of overlays.splice(0).reverse()) {
    try {
      execFileSync("umount", [target], { stdio: "ignore" });
    } catch {
      execFileSync("umount", ["-l", target], { stdio: "ignore" });
    }
  }
  client?.close();
  for (const c of cleanups.splice(0).reverse()) await c().catch((err) => console.error(`cleanup: ${err.message}`));
  rmSync(work, { recursive: true, force: true });
}

// ---- the run ----

try {
  const registry = await startRegistry(work, { quiet: true });
  cleanups.push(registry.stop);
  const proxy = await startSkiff("node", work, registry.base);
  cleanups.push(proxy.stop);
  const host = new URL(registry.base).host;

  const images = [];
  for (let i = 0; i < IMAGES; i++) {
    const tag = String(i).padStart(2, "0");
    const layers = await buildImage(i);
    const layout = join(work, `layout-${tag}`);
    writeLayout(layout, layers.map((l) => l.gz), layers.map((l) => l.diffId));
    const manifest = JSON.parse(readFileSync(join(layout, "index.json"), "utf8")).manifests[0].digest;
    const name = `bench/img-${tag}`;
    execFileSync("skopeo", ["copy", "--quiet", "--dest-tls-verify=false", "--preserve-digests", `oci:${layout}:bench`, `docker://${host}/${name}:1`]);
    const man = JSON.parse(readFileSync(join(layout, "blobs", "sha256", manifest.slice(7)), "utf8"));
    rmSync(layout, { recursive: true, force: true });
    // The proxy converts each image once, before anything is measured (a warm edge).
    await fetchBootstrap(proxy.base, name, manifest, { ns: host, timeoutMs: 300_000 });
    images.push({
      tag,
      ref: `${host}/${name}:1`,
      manifest,
      layers: layers.map((l, n) => ({ diffId: l.diffId, digest: man.layers[n].digest, gzBytes: l.gz.length, tarBytes: l.tarBytes })),
    });
    console.error(`image ${tag}: ${layers.map((l) => `${(l.gz.length / 1e6).toFixed(1)} MB`).join(" + ")} gzip (${(layers.reduce((n, l) => n + l.tarBytes, 0) / 1e6).toFixed(0)} MB tar)`);
  }

  const snapshotter = await startSnapshotter(proxy.base);
  connect();
  const started = { snapshotter: memoryOf(snapshotter.child.pid) };
  const reads = [];
  const curve = [];
  let afterOne;
  const t0 = performance.now();
  for (const image of images) {
    const rootfs = await prepareImage(image);
    reads.push(readLikeAContainer(rootfs, image.tag));
    const s = await sample(snapshotter.child);
    curve.push({ images: reads.length, total: s.snapshotter.rss + s.daemon.rss + s.keeper.rss });
    if (reads.length === 1) afterOne = s;
    const r = reads.at(-1);
    console.error(`image ${image.tag} mounted and read (${r.readFiles} files, ${(r.readBytes / 1e6).toFixed(1)} MB): snapshotter ${mib(s.snapshotter.rss).toFixed(0)} MiB, mounts daemon ${mib(s.daemon.rss).toFixed(0)} MiB, FUSE keeper ${mib(s.keeper.rss).toFixed(0)} MiB`);
  }
  const seconds = (performance.now() - t0) / 1000;
  await sleep(2_000); // settled: nothing is running
  const afterAll = await sample(snapshotter.child);
  const fuseMounts = readFileSync("/proc/mounts", "utf8").split("\n").filter((l) => l.includes(`${snapRoot}/`) && / fuse/.test(l)).length;
  if (fuseMounts !== IMAGES * 3) throw new Error(`${fuseMounts} FUSE mounts, expected ${IMAGES * 3}`);
  // The layer bootstraps the mounts daemon decoded and keeps, one per mount.
  const snapshots = join(snapRoot, "snapshots");
  const bootstrapBytes = readdirSync(snapshots)
    .map((id) => join(snapshots, id, "layer.bootstrap"))
    .reduce((n, f) => n + (lstatSync(f, { throwIfNoEntry: false })?.size ?? 0), 0);

  const sum = (k) => reads.reduce((n, r) => n + r[k], 0);
  const gz = images.reduce((n, im) => n + im.layers.reduce((m, l) => m + l.gzBytes, 0), 0);
  const tarBytes = images.reduce((n, im) => n + im.layers.reduce((m, l) => m + l.tarBytes, 0), 0);
  const total = (s) => s.snapshotter.rss + s.daemon.rss + s.keeper.rss;
  const totalHwm = (s) => s.snapshotter.hwm + s.daemon.hwm + s.keeper.hwm;
  const fileBacked = (p) => p.rss - p.anon;
  const row = (what, a, b) => `| ${what} | ${a} | ${b} |`;
  const m = (bytes) => mib(bytes).toFixed(0);
  // On a kernel that lets the daemon read its connections itself, the keeper is a shell holding copies of them.
  const holding = afterAll.keeper.name !== "node";
  const keeperRole = holding ? "which reads them itself, copies held by a shell that becomes the FUSE keeper if the daemon dies" : "held by the FUSE keeper";
  const keeperRow = holding ? "a shell holding copies of them" : "holds them";
  const verdict = total(afterAll) <= GOAL_MIB * 2 ** 20 ? "met" : "not met";
  const body = `Machine: ${machine()}. Command: \`npm run bench:snapshotter-memory -- --write\`.

Goal: with ${IMAGES} images mounted, all node-side processes together (\`skiff snapshotter\`, its
mounts daemon and FUSE keeper) stay at or below ${GOAL_MIB} MiB RSS.

The images: ${IMAGES} distinct images of real files from the host's /usr, 3 gzip layers each (a Python
standard library, a share of the Python packages, a slice of /usr/share/doc and an app file); each
layer a different selection, no layer shared between images: ${(gz / 1e6).toFixed(0)} MB of gzip,
${(tarBytes / 1e6).toFixed(0)} MB of tar, ${Math.round(sum("files") / IMAGES)} files per image on average. A
Distribution registry and skiff (converted once before measuring: a warm edge) on loopback. The
snapshotter, with its defaults (1 MiB chunks, codec none), is driven over its gRPC socket as
containerd's CRI plugin drives it: each layer prepared with the CRI labels and served lazily
(${fuseMounts} FUSE mounts, served by the mounts daemon, ${keeperRole}), then a container snapshot per image, whose overlay is
mounted and read as a container start would: \`find\` over the tree (a stat of each of its
${Math.round(sum("entries") / IMAGES)} entries on average), then ${sum("readFiles")} files in all
(${Math.round(sum("readFiles") / IMAGES)} per image, chosen pseudo-randomly), ${(sum("readBytes") / 1e6).toFixed(0)} MB,
${((100 * sum("readBytes")) / sum("totalBytes")).toFixed(0)} % of the images' file bytes. All ${IMAGES} stay
mounted. The mounts daemon fetched ${(afterAll.fetched / 1e6).toFixed(0)} MB from the proxy (less than was read: the images
have files in common, and a chunk fetched for one is in the node's chunk cache for the others); the
cache on disk holds ${(afterAll.cacheBytes / 1e6).toFixed(0)} MB. Preparing, mounting and reading all of
them took ${seconds.toFixed(1)} s. Memory from /proc/PID/status: VmRSS now, VmHWM the peak.

| process | after 1 image: RSS (peak) MiB | after ${IMAGES} images: RSS (peak) MiB |
|---|---:|---:|
${row("`skiff snapshotter` (gRPC, metadata)", `${m(afterOne.snapshotter.rss)} (${m(afterOne.snapshotter.hwm)})`, `${m(afterAll.snapshotter.rss)} (${m(afterAll.snapshotter.hwm)})`)}
${row(`mounts daemon (serves ${afterAll.mounts} FUSE mounts, ${afterAll.daemon.threads} threads)`, `${m(afterOne.daemon.rss)} (${m(afterOne.daemon.hwm)})`, `${m(afterAll.daemon.rss)} (${m(afterAll.daemon.hwm)})`)}
${row(`FUSE keeper (${keeperRow}, ${afterAll.keeper.threads} thread${afterAll.keeper.threads === 1 ? "" : "s"})`, `${m(afterOne.keeper.rss)} (${m(afterOne.keeper.hwm)})`, `${m(afterAll.keeper.rss)} (${m(afterAll.keeper.hwm)})`)}
${row("**total**", `**${m(total(afterOne))}** (${m(totalHwm(afterOne))})`, `**${m(total(afterAll))}** (${m(totalHwm(afterAll))})`)}

Goal ${verdict}: ${m(total(afterAll))} MiB of ${GOAL_MIB} MiB with ${IMAGES} images mounted (the peaks, not
reached at the same moment, add up to ${m(totalHwm(afterAll))} MiB). RSS counts the pages the processes share
once in each: file-backed pages, mostly the node binary's, are ${m(fileBacked(afterAll.snapshotter))} MiB of the snapshotter's
RSS, ${m(fileBacked(afterAll.daemon))} MiB of the daemon's and ${m(fileBacked(afterAll.keeper))} MiB of the keeper's; their anonymous (own) memory is
${m(afterAll.snapshotter.anon)}, ${m(afterAll.daemon.anon)} and ${m(afterAll.keeper.anon)} MiB. The snapshotter alone, started and idle: ${m(started.snapshotter.rss)} MiB. The
daemon's ${afterAll.mounts} decoded layer bootstraps: ${(bootstrapBytes / 2 ** 20).toFixed(1)} MiB. Total RSS as images
were added: ${curve
    .filter((c) => c.images === 1 || c.images % 5 === 0 || c.images === IMAGES)
    .map((c) => `${c.images}: ${m(c.total)}`)
    .join(", ")} MiB.`;
  console.log(body);
  if (values.write) replaceSection(join(root, "docs", "benchmarks.md"), "snapshotter-memory", `Node memory: ${IMAGES} images under \`skiff snapshotter\``, body);
} finally {
  await finish();
}
