// Baselines for the cold-start benchmark: a private containerd pulling an image the ordinary way
// (`ctr image pull`: fetch, then unpack into the overlayfs snapshotter), the stargz snapshotter
// pulling an eStargz copy lazily (`ctr-remote image rpull`: layers mounted over FUSE, fetched on
// demand), and containerd's CRI plugin with `skiff snapshotter` as its snapshotter (`skiff pull`
// through CRI, as kubelet pulls: layers mounted lazily from a skiff proxy), each followed by the
// workload in a chroot on a read-write snapshot of the image's rootfs.
//
//   const bin = await buildStargzSnapshotter(cacheDir);              // once; reused afterwards
//   const prep = await startContainerd(work);                        // throwaway, for the conversion
//   await prepareEstargz(prep, `${host}/bench/py:1`, `${host}/bench/py:esgz`);
//   await prep.stop();
//   const cd = await startContainerd(work, { stargzBinary: bin });   // fresh per measured run
//   const r = await lazyPullAndRun(cd, `${relayHost}/bench/py:esgz`, ["python3", "-c", "..."]);
//   await cd.stop();
//   const sk = await startContainerd(work, { skiff: { proxy: edgeUrl, registries: [host] } });
//   const s = await skiffPullAndRun(sk, `${host}/bench/py:1`, ["python3", "-c", "..."]);
//   await sk.stop();
//
// Content is shared by every namespace of a containerd, so a cold run needs a fresh containerd
// root (and stargz root): start one per run, before the timing. Needs root, containerd, ctr,
// ctr-remote, fusermount and Go with Debian's packaged sources (apt-get install containerd
// stargz-snapshotter golang-github-containerd-stargz-snapshotter-dev golang-go). Registries are
// plain HTTP on 127.0.0.1. SKIFF_SNAPSHOTTER_NODE_ARGS adds node flags to `skiff snapshotter`,
// which hands them on to its mounts daemon and FUSE keeper (e.g. `--cpu-prof --cpu-prof-dir DIR`).
import { spawn, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { closeSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, readdirSync, renameSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { createConnection } from "node:net";
import { homedir, tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { containerdConfig } from "./containerd-config.mjs";

const SKIFF_BIN = fileURLToPath(new URL("../bin/skiff.js", import.meta.url));
/** The namespace containerd's CRI plugin keeps its images and snapshots in. */
const CRI_NAMESPACE = "k8s.io";

/** Where Debian's golang-*-dev packages put Go sources (a GOPATH tree). */
const GOCODE = "/usr/share/gocode/src";
const MAIN_GO = fileURLToPath(new URL("./stargz/main.go", import.meta.url));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export const defaultCacheDir = () => join(process.env.XDG_CACHE_HOME ?? join(homedir(), ".cache"), "skiff-bench");

/**
 * Runs a command to completion within `timeoutMs` (then SIGKILL); resolves { code, stdout, stderr }.
 * `check` (default true) rejects on a non-zero exit, with its stderr.
 */
export function run(cmd, args, { timeoutMs = 120_000, check = true, env } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"], env: env ?? process.env });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.once("error", (err) => (clearTimeout(timer), reject(err)));
    child.once("close", (code, signal) => {
      clearTimeout(timer);
      const result = { code, stdout, stderr };
      if (check && code !== 0) reject(new Error(`${cmd} ${args.join(" ")}: ${signal ? `killed (${signal}, ${timeoutMs} ms limit)` : `exit ${code}`}\n${stderr.slice(-2000)}`));
      else resolve(result);
    });
  });
}

/**
 * Builds bench/stargz/main.go into `cacheDir` once (rebuilt only when main.go changes); returns the
 * binary's path. GOPATH mode against Debian's packaged sources: a temp GOPATH whose src links every
 * tree of /usr/share/gocode/src, plus the program as its own package.
 */
export async function buildStargzSnapshotter(cacheDir = defaultCacheDir()) {
  const bin = join(cacheDir, "containerd-stargz-bench");
  const source = readFileSync(MAIN_GO);
  const stamp = createHash("sha256").update(source).digest("hex");
  const stampFile = `${bin}.sha256`;
  if (existsSync(bin) && existsSync(stampFile) && readFileSync(stampFile, "utf8").trim() === stamp) return bin;
  for (const [tool, pkg] of [["go", "golang-go"], ["ctr-remote", "stargz-snapshotter"]]) {
    if (spawnSync("sh", ["-c", `command -v ${tool}`]).status !== 0) throw new Error(`${tool} is missing (apt-get install ${pkg})`);
  }
  if (!existsSync(join(GOCODE, "github.com", "containerd", "stargz-snapshotter", "fs"))) {
    throw new Error(`${GOCODE} lacks stargz-snapshotter (apt-get install golang-github-containerd-stargz-snapshotter-dev)`);
  }
  mkdirSync(cacheDir, { recursive: true });
  const gopath = mkdtempSync(join(tmpdir(), "skiff-stargz-gopath-"));
  try {
    const src = join(gopath, "src");
    mkdirSync(join(src, "skiffbench", "stargz"), { recursive: true });
    for (const entry of readdirSync(GOCODE)) symlinkSync(join(GOCODE, entry), join(src, entry));
    copyFileSync(MAIN_GO, join(src, "skiffbench", "stargz", "main.go"));
    console.error(`building the stargz snapshotter into ${bin} (once)`);
    const env = { ...process.env, GOPATH: gopath, GO111MODULE: "off", GOFLAGS: "", CGO_ENABLED: "0" };
    await run("go", ["build", "-o", `${bin}.tmp`, "skiffbench/stargz"], { timeoutMs: 600_000, env });
    renameSync(`${bin}.tmp`, bin);
    writeFileSync(stampFile, `${stamp}\n`);
    return bin;
  } finally {
    rmSync(gopath, { recursive: true, force: true });
  }
}

/** Mount points at or under `dir`, deepest first, with their filesystem types. */
function mountsUnder(dir) {
  const unescape = (s) => s.replace(/\\([0-7]{3})/g, (_, o) => String.fromCharCode(parseInt(o, 8)));
  return readFileSync("/proc/self/mountinfo", "utf8")
    .split("\n")
    .filter(Boolean)
    .map((line) => {
      const [pre, post] = line.split(" - ");
      return { path: unescape(pre.split(" ")[4]), type: post.split(" ")[0] };
    })
    .filter((m) => m.path === dir || m.path.startsWith(`${dir}/`))
    .sort((a, b) => b.path.length - a.path.length);
}

/** Unmounts everything under `dir` (FUSE with fusermount -uz, the rest with umount, lazily if busy). */
async function unmountAllUnder(dir) {
  for (const m of mountsUnder(dir)) {
    if (m.type.startsWith("fuse")) await run("fusermount", ["-uz", m.path], { check: false, timeoutMs: 10_000 });
    if ((await run("umount", [m.path], { check: false, timeoutMs: 10_000 })).code !== 0) await run("umount", ["-l", m.path], { check: false, timeoutMs: 10_000 });
  }
}

/** SIGTERM, then SIGKILL after `ms`; resolves when the child has exited. */
function stopChild(child, ms = 15_000) {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    const timer = setTimeout(() => child.kill("SIGKILL"), ms);
    child.once("exit", () => (clearTimeout(timer), resolve()));
    child.kill("SIGTERM");
  });
}

const tail = (file) => {
  try {
    return readFileSync(file, "utf8").slice(-2000);
  } catch {
    return "";
  }
};

/** Polls `probe` (truthy = done) every 200 ms for at most `ms`; throws `what` on timeout. */
async function waitFor(what, probe, ms = 30_000) {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (await probe()) return;
    await sleep(200);
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what}`);
}

const canConnect = (socket) =>
  new Promise((resolve) => {
    const c = createConnection(socket);
    c.once("connect", () => (c.destroy(), resolve(true)));
    c.once("error", () => resolve(false));
  });

/** Pids of processes (not this one) whose command line contains `text`. */
async function pidsWith(text) {
  const pattern = text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  const { stdout } = await run("pgrep", ["-f", "--", pattern], { check: false, timeoutMs: 10_000 });
  return stdout.split("\n").filter(Boolean).map(Number).filter((pid) => pid !== process.pid);
}

/**
 * The mounts daemon `skiff snapshotter` started (same argv plus --mounts-daemon, so the same unique
 * --root): SIGTERM by pid, SIGKILL after `ms`.
 */
async function stopMountsDaemon(skiffRoot, ms = 15_000) {
  const signal = (pids, sig) => {
    for (const pid of pids) {
      try {
        process.kill(pid, sig);
      } catch {
        // gone meanwhile
      }
    }
  };
  signal(await pidsWith(`--root ${skiffRoot} `), "SIGTERM");
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if ((await pidsWith(`--root ${skiffRoot} `)).length === 0) return;
    await sleep(200);
  }
  signal(await pidsWith(`--root ${skiffRoot} `), "SIGKILL");
}

/** `<hostsDir>/<registry>/hosts.toml`: pulls and resolves of `registry` go to `mirror` (plain http) first. */
function writeMirrorHostsToml(hostsDir, registry, mirror) {
  mkdirSync(join(hostsDir, registry), { recursive: true });
  const q = (s) => JSON.stringify(s);
  writeFileSync(join(hostsDir, registry, "hosts.toml"), [`server = ${q(`http://${registry}`)}`, "", `[host.${q(mirror.replace(/\/+$/, ""))}]`, '  capabilities = ["pull", "resolve"]', ""].join("\n"));
}

/**
 * A private containerd in a new directory under `workDir` (root, state, sockets, logs; removed by
 * stop()), the CRI plugin off. With `stargzBinary`, also that snapshotter (its own root in the same
 * directory), registered as the proxy snapshotter "stargz". With `skiff` ({ proxy, registries }):
 * `skiff snapshotter --proxy PROXY` (defaults otherwise, metrics off; its root, with the chunk
 * cache, in the same directory) as the proxy snapshotter "skiff", and the CRI plugin on with it as
 * its snapshotter and PROXY as the mirror of each of `registries` (`host:port`, plain http) in its
 * hosts directory, so that CRI resolves manifests and fetches configs through the proxy. Returns
 * { dir, address, ctr(args, opts), ctrRemote(args, opts), stop() }; ctr/ctrRemote run against it in
 * namespace opts.ns (default "bench") and resolve { code, stdout, stderr }, rejecting on failure.
 */
export async function startContainerd(workDir, { stargzBinary, skiff, ns: defaultNs = "bench" } = {}) {
  mkdirSync(workDir, { recursive: true });
  const dir = mkdtempSync(join(workDir, "containerd-"));
  const address = join(dir, "containerd.sock");
  const stargzSocket = join(dir, "stargz.sock");
  const skiffSocket = join(dir, "skiff.sock");
  const skiffRoot = join(dir, "skiff");
  const children = [];

  const stop = async () => {
    // Image mounts first (their overlays sit on the snapshotters' directories), then the daemons:
    // the stargz snapshotter unmounts its FUSE layers when it exits; sweep whatever remains.
    await unmountAllUnder(dir);
    for (const child of [...children].reverse()) await stopChild(child);
    // skiff's FUSE layers belong to its mounts daemon, which outlives the snapshotter by design.
    if (skiff) await stopMountsDaemon(skiffRoot);
    await unmountAllUnder(dir);
    rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
  };

  try {
    if (stargzBinary) {
      const log = openSync(join(dir, "stargz.log"), "a");
      const sn = spawn(stargzBinary, ["--root", join(dir, "stargz"), "--address", stargzSocket], { stdio: ["ignore", log, log] });
      closeSync(log);
      children.push(sn);
      await waitFor("the stargz snapshotter's socket", async () => {
        if (sn.exitCode !== null) throw new Error(`stargz snapshotter exited (${sn.exitCode}): ${tail(join(dir, "stargz.log"))}`);
        return existsSync(stargzSocket) && (await canConnect(stargzSocket));
      });
    }
    const snapshotters = stargzBinary ? { stargz: stargzSocket } : {};
    let cri;
    if (skiff) {
      // Started before containerd: CRI's snapshotter must answer when the plugin loads.
      const log = openSync(join(dir, "skiff.log"), "a");
      const sn = spawn(process.execPath, [...(process.env.SKIFF_SNAPSHOTTER_NODE_ARGS?.split(" ").filter(Boolean) ?? []), SKIFF_BIN, "snapshotter", "--proxy", skiff.proxy, "--root", skiffRoot, "--address", skiffSocket, "--metrics", "off"], { stdio: ["ignore", "pipe", log] });
      closeSync(log);
      children.push(sn);
      let said = "";
      sn.stdout.on("data", (d) => (said += d));
      await waitFor("skiff snapshotter to listen", () => {
        if (sn.exitCode !== null) throw new Error(`skiff snapshotter exited (${sn.exitCode}): ${tail(join(dir, "skiff.log"))}`);
        return said.includes(`skiff snapshotter listening on ${skiffSocket}`);
      });
      // Its mounts daemon (and on kernels before 6.9 its FUSE keeper), started with it: on a node they are up long before a pull.
      await waitFor("the skiff mounts daemon to listen", () => canConnect(join(skiffRoot, "mounts.sock")));
      snapshotters.skiff = skiffSocket;
      const hostsDir = join(dir, "certs.d");
      for (const registry of skiff.registries ?? []) writeMirrorHostsToml(hostsDir, registry, skiff.proxy);
      mkdirSync(join(dir, "cni"), { recursive: true });
      // Images only, no pods: the sandbox image is never pulled and the CNI directory stays empty.
      cri = { sandboxImage: "pause.invalid/pause:none", snapshotter: "skiff", cniConfDir: join(dir, "cni"), registryConfigPath: hostsDir };
    }
    const config = containerdConfig({ dir, address, snapshotters, cri });
    writeFileSync(join(dir, "config.toml"), config);
    const log = openSync(join(dir, "containerd.log"), "a");
    const daemon = spawn("containerd", ["--config", join(dir, "config.toml")], { stdio: ["ignore", log, log] });
    closeSync(log);
    children.push(daemon);
    await waitFor("containerd to answer", async () => {
      if (daemon.exitCode !== null) throw new Error(`containerd exited (${daemon.exitCode}): ${tail(join(dir, "containerd.log"))}`);
      return (await run("ctr", ["--address", address, "version"], { check: false, timeoutMs: 5_000 })).code === 0;
    });
    // (a) must unpack into overlayfs, not silently into the copying native snapshotter.
    const plugins = (await run("ctr", ["--address", address, "plugins", "ls"], { timeoutMs: 10_000 })).stdout;
    if (!/io\.containerd\.snapshotter\.v1\s+overlayfs\s.*\sok\s*$/m.test(plugins)) throw new Error(`containerd's overlayfs snapshotter is not available here:\n${plugins}`);
  } catch (err) {
    await stop().catch(() => {});
    throw err;
  }

  const withNs = (cmd) => (args, { ns = defaultNs, timeoutMs = 600_000 } = {}) => run(cmd, ["--address", address, "--namespace", ns, ...args], { timeoutMs });
  return {
    dir,
    address,
    ctr: withNs("ctr"),
    ctrRemote: withNs("ctr-remote"),
    log: () => tail(join(dir, "containerd.log")),
    stargzLog: () => tail(join(dir, "stargz.log")),
    skiffLog: () => tail(join(dir, "skiff.log")) + tail(join(skiffRoot, "mounts-daemon.log")),
    stop,
  };
}

/**
 * Converts `srcRef` to eStargz (`ctr-remote image convert --estargz --oci`, the plain conversion:
 * no prefetch landmarks from a workload run) and pushes it as `dstRef`. Uses `containerd`'s content
 * store, so give it a throwaway containerd, not one a measured run will use. Returns { seconds }.
 */
export async function prepareEstargz(containerd, srcRef, dstRef, { plainHttp = true } = {}) {
  const t0 = performance.now();
  const http = plainHttp ? ["--plain-http"] : [];
  await containerd.ctr(["content", "fetch", ...http, srcRef]); // all blobs, no unpack: convert reads them
  await containerd.ctrRemote(["image", "convert", "--estargz", "--oci", srcRef, dstRef]);
  await containerd.ctr(["image", "push", ...http, dstRef]);
  return { seconds: (performance.now() - t0) / 1000 };
}

/** The chain id (the committed snapshot's name) of the image's rootfs: from its config's diff ids. */
async function chainId(containerd, ref) {
  const json = async (digest) => JSON.parse((await containerd.ctr(["content", "get", digest], { timeoutMs: 30_000 })).stdout);
  const listed = (await containerd.ctr(["image", "ls"], { timeoutMs: 30_000 })).stdout.split("\n").map((l) => l.trim().split(/\s+/));
  const row = listed.find((f) => f[0] === ref);
  if (!row) throw new Error(`${ref} is not in containerd's image list`);
  let manifest = await json(row[2]);
  if (manifest.manifests) {
    // An index: the linux/amd64 (this machine's) manifest.
    const m = manifest.manifests.find((d) => d.platform?.os === "linux" && d.platform?.architecture === "amd64");
    if (!m) throw new Error(`${ref}: no linux/amd64 manifest`);
    manifest = await json(m.digest);
  }
  const { diff_ids: diffIds } = (await json(manifest.config.digest)).rootfs;
  return diffIds.reduce((chain, diff) => (chain === null ? diff : `sha256:${createHash("sha256").update(`${chain} ${diff}`).digest("hex")}`), null);
}

/**
 * A read-write snapshot on the image's rootfs, mounted at a new dir, the workload in a chroot on it,
 * then unmounted and removed. Not `ctr image mount`: in ctr 1.6 it ignores its --snapshotter flag
 * (reads a global one that does not exist) and so always unpacks into overlayfs, which for a lazily
 * pulled image fails (the layer blobs are not in the content store). `ctr snapshots prepare` labels
 * the snapshot as a GC root, so containerd's GC cannot take it while the workload runs.
 */
async function mountAndRun(containerd, ref, snapshotter, workload, t0, pulled, expect) {
  const target = mkdtempSync(join(containerd.dir, "rootfs-"));
  const key = `bench-${target.slice(-6)}`;
  const snapshots = (args, timeoutMs) => containerd.ctr(["snapshots", "--snapshotter", snapshotter, ...args], { timeoutMs });
  let prepared = false;
  try {
    const parent = await chainId(containerd, ref);
    const mounts = JSON.parse((await snapshots(["prepare", "--mounts", key, parent])).stdout);
    prepared = true;
    for (const m of mounts) await run("mount", ["-t", m.Type, m.Source, target, ...(m.Options?.length ? ["-o", m.Options.join(",")] : [])], { timeoutMs: 30_000 });
    const mounted = performance.now();
    const out = await run("chroot", [target, ...workload], { timeoutMs: 600_000 });
    const done = performance.now();
    if (expect !== undefined && !out.stdout.startsWith(expect)) throw new Error(`workload said ${JSON.stringify(out.stdout)} (stderr ${JSON.stringify(out.stderr.slice(-500))})`);
    return {
      seconds: (done - t0) / 1000,
      pullSeconds: (pulled - t0) / 1000,
      mountSeconds: (mounted - pulled) / 1000,
      runSeconds: (done - mounted) / 1000,
      output: out.stdout,
    };
  } finally {
    // Not timed. stop() sweeps any mount this leaves behind.
    await unmountAllUnder(target);
    if (prepared) await snapshots(["rm", key], 60_000).catch(() => {});
  }
}

/**
 * (a) `ctr image pull` (fetch every layer, unpack into overlayfs), mount, and the workload in a
 * chroot: { seconds (start to the workload's exit), pullSeconds, mountSeconds, runSeconds, output }.
 * `expect`: a prefix the output must start with (else it throws).
 */
export async function pullAndRun(containerd, ref, workload, { plainHttp = true, expect } = {}) {
  const t0 = performance.now();
  await containerd.ctr(["image", "pull", ...(plainHttp ? ["--plain-http"] : []), "--snapshotter", "overlayfs", ref]);
  return mountAndRun(containerd, ref, "overlayfs", workload, t0, performance.now(), expect);
}

/**
 * (b) `ctr-remote image rpull` of an eStargz image (manifest and config fetched; each layer mounted
 * by the stargz snapshotter over FUSE, contents fetched on demand and in the background), mount, and
 * the workload in a chroot; same result as pullAndRun. `containerd` must have been started with
 * `stargzBinary`.
 */
export async function lazyPullAndRun(containerd, ref, workload, { plainHttp = true, expect } = {}) {
  const t0 = performance.now();
  await containerd.ctrRemote(["image", "rpull", ...(plainHttp ? ["--plain-http"] : []), "--snapshotter", "stargz", ref]);
  return mountAndRun(containerd, ref, "stargz", workload, t0, performance.now(), expect);
}

/**
 * (c) CRI's PullImage, called from this running process as kubelet calls it (CRI resolves the
 * manifest and fetches the config, and labels each layer so that the skiff snapshotter mounts it
 * lazily from the proxy instead of containerd downloading it), mount, and the workload in a chroot,
 * in CRI's namespace; same result as pullAndRun. `containerd` must have been started with `skiff`.
 * (`skiff pull` makes the same call from a process of its own, whose start adds about half a second.)
 */
export async function skiffPullAndRun(containerd, ref, workload, { expect } = {}) {
  const { criPullImage } = await import("../dist/node-agent/src/cri/image-service.js");
  const t0 = performance.now();
  await criPullImage(ref, { address: containerd.address, timeoutMs: 600_000 });
  const pulled = performance.now();
  const inCri = { ...containerd, ctr: (args, o = {}) => containerd.ctr(args, { ...o, ns: CRI_NAMESPACE }) };
  return mountAndRun(inCri, ref, "skiff", workload, t0, pulled, expect);
}
