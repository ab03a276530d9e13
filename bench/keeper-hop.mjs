// What the FUSE keeper's hop costs per request: `node bench/keeper-hop.mjs [--rounds 5] [--dist DIR ...]`.
// The same image served two ways, with warm data (every byte in memory) so that only the path of a
// request differs: direct, as `skiff mount` serves (this process reads /dev/fuse and writes the
// replies), and through the keeper, as the snapshotter's mounts daemon serves (a keeper process
// holds /dev/fuse and relays each request over its unix socket to this process, which answers
// through a KeeperLink). Each run gets a fresh mount, so the kernel has nothing cached, and times a
// workload in a child process: `find` + stat of the whole tree, `cat` of the small files (under 16
// KiB) of /usr, one at a time and by 4 processes at once, and `python3 -c 'import json, decimal, numpy'` in a chroot (what bench:cold-start
// runs). Requests answered are counted; the result is wall time per request, and the CPU time per
// request of the serving process and of the keeper.
//
// The image is bench:cold-start's Debian python3 + numpy layer (built once into the bench cache),
// converted locally. `--dist DIR` (repeatable) compares builds: each a copy of `dist` (default this
// tree's); rounds interleave them and the two paths. `--only walk,small` picks workloads.
// `--keeper-threads 1024,16` runs a keeper of each pool size (default the one the daemon gives
// it, KEEPER_THREADS). KEEPER_NODE_ARGS adds node flags to the keeper (e.g. `--cpu-prof`). Root only (FUSE, chroot). Writes nothing.
import { execFileSync, spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { pythonImageLayer } from "./lazy-mount.mjs";
import { writeLayout } from "./oci-layout.mjs";
import { cpuSeconds, machine, median } from "./report.mjs";
import { root } from "./servers.mjs";

const { values } = parseArgs({ options: { rounds: { type: "string", default: "5" }, dist: { type: "string", multiple: true }, only: { type: "string" }, "keeper-threads": { type: "string" } } });
const ROUNDS = Number(values.rounds);
if (process.getuid?.() !== 0) throw new Error("bench/keeper-hop.mjs needs root (FUSE, chroot)");
const dists = (values.dist ?? [join(root, "dist")]).map((d) => resolve(d));

const WORKLOADS = {
  walk: (mnt) => `find '${mnt}' -printf '%s %m %u\\n' > /dev/null`,
  small: (mnt, list) => `cd '${mnt}' && xargs -0 cat < '${list}' > /dev/null`,
  // The same files read by 4 processes at once: requests in flight together, as a container's
  // threads or several containers starting make them.
  parallel: (mnt, list) => `cd '${mnt}' && xargs -0 -n 64 -P 4 cat < '${list}' > /dev/null`,
  import: (mnt) => `chroot '${mnt}' python3 -c 'import json, decimal, numpy'`,
};
const workloads = values.only ? values.only.split(",") : Object.keys(WORKLOADS);

const load = () => loadavg().map((x) => x.toFixed(2)).join(" / ");
console.error(`${machine()}; load average ${load()} on ${cpus().length} cores`);
const work = mkdtempSync(join(tmpdir(), "skiff-bench-keeper-hop-"));
const cleanups = [];
const finish = async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => {});
  rmSync(work, { recursive: true, force: true });
};
process.once("SIGINT", () => void finish().then(() => process.exit(130)));

/** A build's modules. */
async function load_(dist) {
  const m = (p) => import(join(dist, p));
  return {
    dist,
    devFuse: await m("node-agent/src/fuse/dev-fuse.js"),
    // Builds before request-reader.js read on the thread pool, from dev-fuse.js.
    requestReader: await m("node-agent/src/fuse/request-reader.js").catch(() => undefined),
    K: await m("node-agent/src/fuse/kernel-abi.js"),
    ImageSession: (await m("node-agent/src/fuse/image-session.js")).ImageSession,
    KeeperLink: (await m("node-agent/src/fuse/keeper-link.js")).KeeperLink,
    KEEPER_THREADS: (await m("node-agent/src/fuse/keeper.js")).KEEPER_THREADS,
  };
}

/** Every file's bytes in memory once read (the first, untimed run reads them): warm, and the same for both paths. */
function memoryReader(local) {
  const files = new Map();
  return {
    async read(inode, offset, length) {
      let bytes = files.get(inode);
      if (!bytes) files.set(inode, (bytes = await local.read(inode, 0, local.bootstrap.inode(inode).size)));
      return bytes.subarray(Math.min(offset, bytes.byteLength), Math.min(offset + length, bytes.byteLength));
    },
  };
}

/** utime + stime of a process, in µs. */
const cpuOf = (pid) => cpuSeconds(pid) * 1e6;
const selfCpu = () => {
  const u = process.cpuUsage();
  return u.user + u.system;
};

function runWorkload(script) {
  return new Promise((resolve, reject) => {
    const t = performance.now();
    const child = spawn("sh", ["-c", script], { stdio: ["ignore", "ignore", "inherit"] });
    child.once("error", reject);
    child.once("exit", (code) => (code === 0 ? resolve((performance.now() - t) / 1000) : reject(new Error(`${script}: exit ${code}`))));
  });
}

/** Direct: this process serves the mount, as mount-direct.ts does. */
function directPath(b, bootstrap, reader) {
  return {
    name: "direct",
    async mount(mnt, counter) {
      const fd = await b.devFuse.mountDevFuse(mnt);
      const session = new b.ImageSession({ bootstrap, reader, view: "image", readTimeoutMs: 60_000 });
      const readRequests = b.requestReader?.readRequests ?? b.devFuse.readRequests;
      let requests;
      const ended = new Promise((resolve) => {
        requests = readRequests(
          fd,
          (req) => {
            if (!b.K.UNANSWERED_OPS.has(b.K.requestOpcode(req))) counter.n++;
            session.handle(req, (reply, body) => {
              counter.bytes += reply.byteLength + (body ?? []).reduce((n, piece) => n + piece.byteLength, 0);
              b.devFuse.writeReply(fd, reply, body);
            });
          },
          () => resolve(),
        );
      });
      return async () => {
        await b.devFuse.unmountDevFuse(mnt);
        await ended;
        await (requests?.close?.() ?? b.devFuse.closeDevFuse(fd));
      };
    },
    pid: undefined,
  };
}

/** Through the keeper: a keeper process holds the mount, this one answers over its socket, as the mounts daemon does. */
async function keeperPath(b, bootstrap, reader, dir, threads) {
  const socket = join(dir, "keeper.sock");
  const script = `import(process.argv[1]).then((m) => m.runKeeperProcess({ socket: process.argv[2], timeoutMs: 60000, log: (s) => console.error(s) }))`;
  // As the mounts daemon starts it: a small young generation, a thread per mount in the pool.
  const keeper = spawn(process.execPath, ["--max-semi-space-size=1", ...(process.env.KEEPER_NODE_ARGS?.split(" ").filter(Boolean) ?? []), "-e", script, join(b.dist, "node-agent/src/fuse/keeper.js"), socket], {
    stdio: ["ignore", "ignore", "ignore"],
    env: { ...process.env, UV_THREADPOOL_SIZE: String(threads ?? b.KEEPER_THREADS) },
  });
  cleanups.push(() => new Promise((r) => (keeper.exitCode !== null ? r() : (keeper.once("exit", r), keeper.kill("SIGTERM")))));
  let current;
  const link = await b.KeeperLink.connect({
    socket,
    startKeeper: () => {},
    onRequest: (id, req) => {
      if (!b.K.UNANSWERED_OPS.has(b.K.requestOpcode(req))) current.counter.n++;
      current.session.handle(req, (reply, body) => {
        current.counter.bytes += reply.byteLength + (body ?? []).reduce((n, piece) => n + piece.byteLength, 0);
        link.reply(id, reply, body);
      });
    },
    onGone: () => {},
    onLost: () => console.error("the keeper went away"),
  });
  link.ready();
  cleanups.push(async () => link.close());
  let id = 0;
  return {
    name: threads ? `keeper(${threads} threads)` : "keeper",
    async mount(mnt, counter) {
      current = { counter, session: new b.ImageSession({ bootstrap, reader, view: "image", readTimeoutMs: 60_000 }) };
      const mine = ++id;
      await link.mount(mine, mnt);
      return () => link.unmount(mine);
    },
    pid: keeper.pid,
  };
}

try {
  const layer = await pythonImageLayer(work);
  writeLayout(join(work, "layout"), [layer.gz], [layer.diffId]);
  execFileSync(process.execPath, [join(root, "bin", "skiff.js"), "convert", `${join(work, "layout")}:bench`, "--out", join(work, "converted")], { stdio: "ignore" });
  const { LocalReader } = await import(join(root, "dist", "node-agent", "test", "local-reader.js"));
  const local = await LocalReader.open(join(work, "converted"));
  const reader = memoryReader(local);
  const mnt = join(work, "mnt");
  mkdirSync(mnt);
  const list = join(work, "small-files");

  const builds = [];
  for (const [i, dist] of dists.entries()) {
    const b = await load_(dist);
    const dir = join(work, `build-${i}`);
    mkdirSync(dir);
    const keepers = [];
    for (const threads of values["keeper-threads"]?.split(",").map(Number) ?? [undefined]) {
      const own = join(dir, `keeper-${threads ?? "default"}`);
      mkdirSync(own);
      keepers.push(await keeperPath(b, local.bootstrap, reader, own, threads));
    }
    builds.push({ label: dists.length > 1 ? `${i}:${dist}` : "", paths: [directPath(b, local.bootstrap, reader), ...keepers] });
  }

  const once = async (path, workload) => {
    const counter = { n: 0, bytes: 0 };
    const m0 = performance.now();
    const unmount = await path.mount(mnt, counter);
    const mountMs = performance.now() - m0;
    try {
      const [cpu0, keeper0] = [selfCpu(), path.pid && cpuOf(path.pid)];
      const seconds = await runWorkload(WORKLOADS[workload](mnt, list));
      return { mountMs, seconds, requests: counter.n, bytes: counter.bytes, serverCpuUs: selfCpu() - cpu0, keeperCpuUs: path.pid ? cpuOf(path.pid) - keeper0 : 0 };
    } finally {
      await unmount();
    }
  };

  // Untimed: the small files' list, and every byte the workloads read into memory.
  {
    const counter = { n: 0, bytes: 0 };
    const unmount = await builds[0].paths[0].mount(mnt, counter);
    // In a child that this process doesn't wait on synchronously: this process serves the mount.
    await runWorkload(`cd '${mnt}' && find usr -type f -size -16k -print0 > '${list}'`);
    await unmount();
    for (const w of workloads) await once(builds[0].paths[0], w);
  }

  const results = new Map();
  for (let round = 0; round < ROUNDS; round++) {
    for (const w of workloads) {
      // Alternate the order, so that neither path always runs right after the other.
      const order = builds.flatMap((b) => b.paths.map((p) => ({ b, p })));
      if (round % 2) order.reverse();
      for (const { b, p } of order) {
        const r = await once(p, w);
        const key = `${w} ${p.name}${b.label ? ` ${b.label}` : ""}`;
        if (!results.has(key)) results.set(key, []);
        results.get(key).push(r);
        console.error(`round ${round + 1} ${key}: ${(r.seconds * 1000).toFixed(0)} ms, ${r.requests} requests, ${((r.seconds * 1e6) / r.requests).toFixed(1)} µs/request`);
      }
    }
  }

  // The median, and the least: on a shared machine the least is the run that waited least for a CPU.
  console.log(`| workload | path | requests | reply MB | wall ms | wall µs/request (least) | server CPU µs/request | keeper CPU µs/request | runs µs/request |`);
  console.log(`|---|---|--:|--:|--:|--:|--:|--:|---|`);
  for (const [key, runs] of results) {
    const [w, ...path] = key.split(" ");
    const requests = median(runs.map((r) => r.requests));
    const perReq = (f) => median(runs.map((r) => f(r) / r.requests)).toFixed(1);
    const wall = runs.map((r) => ((r.seconds * 1e6) / r.requests).toFixed(1)).join(", ");
    const least = Math.min(...runs.map((r) => (r.seconds * 1e6) / r.requests)).toFixed(1);
    console.log(`| ${w} | ${path.join(" ")} | ${requests} | ${(median(runs.map((r) => r.bytes)) / 1e6).toFixed(1)} | ${(median(runs.map((r) => r.seconds)) * 1000).toFixed(0)} | ${perReq((r) => r.seconds * 1e6)} (${least}) | ${perReq((r) => r.serverCpuUs)} | ${path[0].startsWith("keeper") ? perReq((r) => r.keeperCpuUs) : "–"} | ${wall} |`);
  }
  // Mounting: the keeper runs mount(8) as the daemon's mounts do, a fork of a process with its pool's threads.
  for (const b of builds) for (const p of b.paths) {
    const runs = [...results].filter(([key]) => key.split(" ").slice(1).join(" ") === `${p.name}${b.label ? ` ${b.label}` : ""}`).flatMap(([, r]) => r);
    console.log(`mount ${p.name}${b.label ? ` ${b.label}` : ""}: median ${median(runs.map((r) => r.mountMs)).toFixed(0)} ms`);
  }
  console.error(`load average at the end: ${load()}`);
} finally {
  await finish();
}
