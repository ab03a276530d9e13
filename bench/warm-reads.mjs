// Warm reads through `skiff mount` (shared by bench:cold-start and bench/warm-read.mjs): the image
// fully in the node's chunk cache (`--prefetch all`, waited out), then the largest file read and
// the tree walked with the kernel's caches dropped before each run, against the same tree on local
// disk and fuse-native's own ceiling (bench/fuse-ceiling.mjs). Root only (FUSE, drop_caches).
import { execFileSync, spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { finishMount } from "./lazy-mount.mjs";
import { cpuSeconds, median, minorFaults } from "./report.mjs";
import { root } from "./servers.mjs";

/** Polls of the mount's stats for prefetchDone, 500 ms apart: 300 s at most. */
const PREFETCH_POLLS = 600;

/**
 * Mounts `${edgeUrl}/bench/py:1` with `--prefetch all` under `work` and waits for the prefetch,
 * extracts `tarFile` beside it, and times `rounds` runs of each measurement (medians):
 * `{ fileBytes, mountMBps, localMBps, ceilingMBps, mountFindS, localFindS, ceilingFindS, entries, mountRunsMBps,
 * agentRuns }` (agentRuns: the agent's minor page faults and CPU seconds in each read).
 * `nodeArgs` go to the agent's node (e.g. `--cpu-prof`); `ceiling: false` skips fuse-native and
 * local disk, `find: false` the walks. Stops are pushed onto `cleanups`; the mount is stopped before returning.
 */
export async function warmReads({ edgeUrl, tarFile, work, cleanups, rounds: count = 3, nodeArgs = [], ceiling: withCeiling = true, find: withFind = true, log = console.error }) {
  const local = join(work, "local-root");
  mkdirSync(local, { recursive: true });
  execFileSync("tar", ["-C", local, "--numeric-owner", "-xf", tarFile]);
  const [size, path] = execFileSync("sh", ["-c", `find ${local} -type f -printf '%s %P\\n' | sort -n | tail -1`], { encoding: "utf8" }).trim().split(" ");
  const dir = mkdtempSync(join(work, "warm-"));
  const mnt = join(dir, "mnt");
  const stats = join(dir, "stats.json");
  const agent = spawn(process.execPath, [...nodeArgs, join(root, "bin", "skiff.js"), "mount", `${edgeUrl}/bench/py:1`, mnt, "--cache", join(dir, "cache"), "--stats", stats, "--prefetch", "all"], { stdio: ["ignore", "pipe", "inherit"] });
  let stopped = false;
  const stopAgent = async () => {
    if (stopped) return;
    stopped = true;
    await finishMount({ agent, stats });
  };
  cleanups.push(stopAgent);
  await new Promise((resolve, reject) => {
    agent.stdout.on("data", (d) => String(d).includes("mounted ") && resolve());
    agent.once("exit", (code) => reject(new Error(`skiff mount exited ${code}`)));
  });
  const prefetchDone = () => existsSync(stats) && JSON.parse(readFileSync(stats, "utf8")).prefetchDone;
  for (let i = 0; i < PREFETCH_POLLS && !prefetchDone(); i++) await new Promise((r) => setTimeout(r, 500));
  if (!prefetchDone()) throw new Error("prefetch did not finish in 300 s");

  // Timed in a child process: this one serves nothing, but the mount must not be read from here synchronously.
  const timed = (script) => {
    execFileSync("sh", ["-c", "sync; echo 3 > /proc/sys/vm/drop_caches"]);
    const t = performance.now();
    execFileSync("sh", ["-c", script], { stdio: "ignore" });
    return (performance.now() - t) / 1000;
  };
  const runs = (script) => Array.from({ length: count }, () => timed(script));
  const rounds = (script) => median(runs(script));
  const readOf = (base) => rounds(`cat '${join(base, path)}' > /dev/null`);
  const findOf = (base) => rounds(`find '${base}' -printf '%s %m %u\\n' > /dev/null`);
  const entries = Number(execFileSync("sh", ["-c", `find '${local}' | wc -l`], { encoding: "utf8" }).trim());
  const fileBytes = Number(size);
  // The agent's page faults and CPU time in each read: the first read of a process also starts
  // the read workers and touches the chunk slab for the first time (docs/benchmarks.md).
  const agentCounters = () => ({ faults: minorFaults(agent.pid), cpuS: cpuSeconds(agent.pid) });
  const mountRuns = [];
  const agentRuns = [];
  for (let i = 0; i < count; i++) {
    const before = agentCounters();
    mountRuns.push(timed(`cat '${join(mnt, path)}' > /dev/null`));
    const after = agentCounters();
    agentRuns.push({ faults: after.faults - before.faults, cpuS: after.cpuS - before.cpuS });
  }
  const result = {
    fileBytes,
    mountMBps: fileBytes / 1e6 / median(mountRuns),
    mountRunsMBps: mountRuns.map((s) => Math.round(fileBytes / 1e6 / s)),
    agentRuns,
    mountFindS: withFind ? findOf(mnt) : undefined,
    entries,
  };
  await stopAgent();
  if (withCeiling) {
    const fuse = await fuseCeiling(work, cleanups, fileBytes, entries);
    Object.assign(result, {
      localMBps: fileBytes / 1e6 / readOf(local),
      ceilingMBps: fileBytes / 1e6 / rounds(`cat '${join(fuse.mnt, "file")}' > /dev/null`),
      localFindS: withFind ? findOf(local) : undefined,
      ceilingFindS: withFind ? findOf(join(fuse.mnt, "tree")) : undefined,
    });
    await fuse.stop();
  }
  log(`warm reads: ${JSON.stringify(result)}`);
  return result;
}

/** bench/fuse-ceiling.mjs mounted: fuse-native with handlers that do nothing, a file and a tree of this size. */
async function fuseCeiling(work, cleanups, fileBytes, entries) {
  const mnt = mkdtempSync(join(work, "ceiling-"));
  const child = spawn(process.execPath, [join(root, "bench", "fuse-ceiling.mjs"), mnt, "--file-bytes", String(fileBytes), "--entries", String(entries)], { stdio: ["ignore", "pipe", "inherit"] });
  const stop = () => new Promise((r) => (child.exitCode !== null ? r() : (child.once("exit", r), child.kill("SIGTERM"))));
  cleanups.push(stop);
  await new Promise((resolve, reject) => {
    child.stdout.on("data", (d) => String(d).includes("mounted ") && resolve());
    child.once("exit", (code) => reject(new Error(`fuse-ceiling exited ${code}`)));
  });
  return { mnt, stop };
}
