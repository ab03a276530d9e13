// What the lazy-start benchmarks (bench:cold-start, bench:cold-edge) share: the Debian image with
// python3 and numpy and the workload that reads it, `skiff serve` in front of a registry, and one lazy
// start: `skiff mount --overlay` of the image on an empty chunk cache, then the workload in a chroot
// over it, timed from starting the mount to the workload's output. Needs root (FUSE, chroot).
import { execFileSync, spawn } from "node:child_process";
import { mkdtempSync, readFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { debianLayer } from "./debian-layer.mjs";
import { writeLayout } from "./oci-layout.mjs";
import { freePort, root, serveEnv, startRegistry, waitUrl } from "./servers.mjs";

/** Where the benchmarks keep what they build once (the Debian image, the stargz snapshotter). */
export const benchCacheDir = join(process.env.XDG_CACHE_HOME ?? join(homedir(), ".cache"), "skiff-bench");

/** The image the lazy-start benchmarks run, and the workload that reads it. */
export const PYTHON_PACKAGES = ["python3", "python3-numpy"];
export const PYTHON_WORKLOAD = ["python3", "-c", "import json, decimal, numpy; print('ready', numpy.__version__)"];
/** A second program on the same image, for learned prefetch: other modules than PYTHON_WORKLOAD's. */
export const OTHER_PYTHON_WORKLOAD = ["python3", "-c", "import email.mime.text, http.client, xml.dom.minidom, argparse, logging; print('ready', 2)"];

/** The Debian image with PYTHON_PACKAGES as one layer: its gzip bytes, tar file and size, diff id and digest (built once, bench/debian-layer.mjs). */
export async function pythonImageLayer(work) {
  const layer = await debianLayer({ cacheDir: benchCacheDir, name: "debian-python3", packages: PYTHON_PACKAGES, workDir: work });
  return { gz: readFileSync(layer.gzFile), tarFile: layer.tarFile, tarBytes: layer.tarBytes, diffId: layer.diffId, digest: layer.digest };
}

/**
 * `skiff serve` of `bin` (this tree's by default) in front of `upstream`, its store in `data`, a long
 * convert wait (no 202 in a measurement); `{ url, port, stop }`, stop also pushed onto `cleanups`.
 */
export async function serveSkiff(upstream, data, cleanups, bin = join(root, "bin", "skiff.js")) {
  const port = await freePort();
  // No metrics listener (edges run side by side); a baseline build from before --metrics-address has none anyway.
  const metricsOff = bin === join(root, "bin", "skiff.js") ? ["--metrics-address", "off"] : [];
  const child = spawn(process.execPath, [bin, "serve", "--upstream", upstream, "--upstream-public", "--host", "127.0.0.1", "--port", String(port), "--data", data, "--convert-wait", "600", ...metricsOff], { stdio: ["ignore", "ignore", "inherit"], env: serveEnv() });
  await waitUrl(`http://127.0.0.1:${port}/v2/`, child);
  const stop = () => new Promise((r) => (child.exitCode !== null ? r() : (child.once("exit", r), child.kill("SIGTERM"))));
  cleanups.push(stop);
  return { url: `http://127.0.0.1:${port}`, port, pid: child.pid, stop };
}

/**
 * The image pushed as bench/py:1 to a new Distribution registry, and a warm edge: `skiff serve` in
 * front of it with the image converted for each codec before any measured run. Stops pushed onto
 * `cleanups`; `{ layer, registry, edge }`.
 */
export async function warmPythonEdge(work, cleanups) {
  const layer = await pythonImageLayer(work);
  const layout = join(work, "layout");
  writeLayout(layout, [layer.gz], [layer.diffId]);
  const registry = await startRegistry(work);
  cleanups.push(registry.stop);
  execFileSync("skopeo", ["copy", "--quiet", "--dest-tls-verify=false", "--preserve-digests", `oci:${layout}:bench`, `docker://${new URL(registry.base).host}/bench/py:1`]);
  const edge = await serveSkiff(registry.base, join(work, "edge"), cleanups);
  for (const codec of ["none", "deflate-raw"]) await bootstrapWithCodec(`${edge.url}/v2/bench/py/_skiff/bootstrap/1`, codec);
  return { layer, registry, edge };
}

/**
 * Asks for the bootstrap at `url` until it comes with `codec`: an edge answers with its `none`
 * conversion while it makes another codec's (--none-first). Seconds from `t0` to that answer.
 */
export async function bootstrapWithCodec(url, codec, t0 = performance.now()) {
  const withCodec = `${url}${url.includes("?") ? "&" : "?"}codec=${codec}`;
  for (let i = 0; i < 1200; i++) {
    const res = await fetch(withCodec);
    await res.arrayBuffer();
    if (res.status !== 200) throw new Error(`${withCodec} answered ${res.status}`);
    if (res.headers.get("skiff-params")?.endsWith(`-${codec}`)) return (performance.now() - t0) / 1000;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`${withCodec}: no ${codec} bootstrap within 2 minutes`);
}

/**
 * The bench image pushed again as `repo` (the same manifest and layers) and its bootstrap asked for
 * once, so the edge is warm for it (the conversion is shared) with nothing learned; returns `repo`.
 */
export async function copyBenchImage(registryBase, edge, repo, ns) {
  const host = new URL(registryBase).host;
  execFileSync("skopeo", ["copy", "--quiet", "--src-tls-verify=false", "--dest-tls-verify=false", `docker://${host}/bench/py:1`, `docker://${host}/${repo}:1`]);
  // As the agents ask for it by default (deflate-raw chunks).
  await bootstrapWithCodec(`${edge.url}/v2/${repo}/_skiff/bootstrap/1${ns ? `?ns=${encodeURIComponent(ns)}` : ""}`, "deflate-raw");
  return repo;
}

/** Mounts `imageUrl` under a new directory in `work` (with `bin`, this tree's skiff by default), runs `workload` in a chroot; the time to its output, and the running agent. */
export async function coldStart(imageUrl, extra, { work, workload, expect = "ready", bin = join(root, "bin", "skiff.js") }) {
  const dir = mkdtempSync(join(work, "run-"));
  const mnt = join(dir, "mnt");
  const stats = join(dir, "stats.json");
  const t0 = performance.now();
  const agent = spawn(process.execPath, [bin, "mount", imageUrl, mnt, "--cache", join(dir, "cache"), "--overlay", join(dir, "overlay"), "--stats", stats, ...extra], { stdio: ["ignore", "pipe", "inherit"] });
  try {
    await new Promise((resolve, reject) => {
      agent.stdout.on("data", (d) => String(d).includes("mounted ") && resolve());
      agent.once("exit", (code) => reject(new Error(`skiff mount exited ${code}`)));
    });
    const out = await new Promise((resolve, reject) => {
      const run = spawn("chroot", [mnt, ...workload], { stdio: ["ignore", "pipe", "inherit"] });
      let text = "";
      run.stdout.on("data", (d) => (text += d));
      run.once("exit", (code) => (code === 0 ? resolve(text) : reject(new Error(`workload exited ${code}`))));
    });
    const seconds = (performance.now() - t0) / 1000;
    if (!out.startsWith(expect)) throw new Error(`workload said ${JSON.stringify(out)}`);
    return { seconds, agent, stats };
  } catch (err) {
    agent.kill("SIGTERM");
    throw err;
  }
}

/** Unmounts (stops the agent) and returns its stats. */
export async function finishMount({ agent, stats }) {
  agent.kill("SIGTERM");
  await new Promise((r) => (agent.exitCode !== null ? r() : agent.once("exit", r)));
  return JSON.parse(readFileSync(stats, "utf8"));
}
