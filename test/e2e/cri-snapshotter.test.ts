// containerd with `skiff snapshotter` as its CRI snapshotter, driven over CRI as kubelet drives it,
// with the Distribution registry behind a skiff proxy: a Debian + python image is pulled and run
// from lazy layers (containerd downloads no layer; the proxy serves a fraction of the image), `skiff
// pull` + `ctr run` work on a host without kubelet, an image the proxy won't convert is pulled and
// run all the same (fail-open), and a kill -9 of the snapshotter, or of its mounts daemon, while a
// container reads its files leaves the container's output and containerd's snapshots intact.
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { gzipSync } from "node:zlib";
import { randomBytes } from "node:crypto";
import { Registry } from "./harness/registry.ts";
import { MT, OciLayout, pushImage, sha256, tarArchive, writeRunnableImage } from "./harness/images.ts";
import { buildDebianPythonImage, buildPauseImage, type DebianImage } from "./harness/cri-images.ts";
import { CriRuntime, type Pod } from "./harness/cri.ts";
import { Skiff, SKIFF_BIN } from "./harness/skiff.ts";
import { SnapshotterProcess } from "./harness/snapshotter.ts";
import { run, waitFor } from "./harness/processes.ts";
import { tempDir } from "./harness/workdir.ts";
import { teardown } from "./harness/teardown.ts";

let registry: Registry;
let proxy: Skiff;
let snapshotter: SnapshotterProcess;
let cri: CriRuntime;
let python: DebianImage;
let pod: Pod;
const refs = { python: "", python2: "", fat: "" };

// Layers over 80 MB are not converted: the fat image's second layer (random bytes) is one.
const MAX_LAYER = "80m";

/** Lazy data the proxy served (data ranges and chunks), from its metrics. */
async function lazyBytesServed(): Promise<number> {
  const text = await proxy.metricsText();
  let bytes = 0;
  for (const line of text.split("\n")) if (line.startsWith("skiff_chunk_bytes_served_total{")) bytes += Number(line.split(" ").pop());
  return bytes;
}

beforeAll(async () => {
  registry = await Registry.start({ name: "cri-skiff-registry" });
  proxy = await Skiff.start({ upstream: registry.url, extraArgs: ["--max-layer-size", MAX_LAYER, "--convert-wait", "120"] });
  const layout = new OciLayout(tempDir("cri-skiff-layout"));
  await buildPauseImage(layout, "pause");
  python = await buildDebianPythonImage(layout, "python");
  // The same python layer under a second name, and with a layer added that the proxy refuses.
  const big = tarArchive([{ name: "opt/big.bin", type: "file", data: randomBytes(90 * 2 ** 20) }]);
  const bigLayer = { ...layout.writeBlob(gzipSync(big, { level: 1 }), MT.layerGzip), diffId: sha256(big) };
  writeRunnableImage(layout, { tag: "fat", layers: [...python.layers, bigLayer], run: { Cmd: ["python3"] } });
  await pushImage(layout, "pause", `${registry.hostPort}/e2e/pause:1`);
  refs.python = `${registry.hostPort}/e2e/python:1`;
  refs.python2 = `${registry.hostPort}/e2e/python-again:1`;
  refs.fat = `${registry.hostPort}/e2e/fat:1`;
  await pushImage(layout, "python", refs.python);
  await pushImage(layout, "python", refs.python2);
  await pushImage(layout, "fat", refs.fat);
  snapshotter = await SnapshotterProcess.start(proxy.url, ["--convert-timeout", "120"]);
  cri = await CriRuntime.start({
    sandboxImage: `${registry.hostPort}/e2e/pause:1`,
    plainHttpRegistries: [registry.hostPort],
    snapshotter: { name: "skiff", address: snapshotter.address },
  });
  pod = await cri.runPod("lazy");
}, 900_000);

afterAll(async () => {
  await cri?.stop();
  await snapshotter?.stop();
  await proxy?.stop();
  await registry?.stop();
  await teardown();
}, 120_000);

describe("containerd + skiff snapshotter, driven like the kubelet", () => {
  test("PullImage, RunPodSandbox, CreateContainer, StartContainer: python runs from lazy layers, no layer downloaded", async () => {
    // A warm edge: the proxy has converted the image (what the cold-start benchmark calls warm).
    const warm = await fetch(`${proxy.url}/v2/e2e/python/_skiff/bootstrap/1`, { signal: AbortSignal.timeout(300_000) });
    expect(warm.status).toBe(200);
    // The node fetches the image bootstrap and each layer's: count them with the data.
    let bootstraps = (await warm.arrayBuffer()).byteLength;
    const params = warm.headers.get("skiff-params")!;
    for (const layer of python.layers) bootstraps += (await (await fetch(`${proxy.url}/v2/e2e/python/_skiff/layers/${layer.digest}/${params}/bootstrap`)).arrayBuffer()).byteLength;
    const registryFrom = await registry.settledRequestCount();
    const servedBefore = await lazyBytesServed();
    const lazyBefore = await snapshotter.metric("skiff_snapshotter_layers_total", { kind: "lazy" }); // the pause image's

    expect(await cri.pullImage(refs.python)).toBe(python.config.digest);
    expect((await snapshotter.metric("skiff_snapshotter_layers_total", { kind: "lazy" })) - lazyBefore).toBe(python.layers.length);
    const r = await cri.runContainer(pod, refs.python, ["python3", "-c", "import json, decimal, sqlite3; print('ready', json.dumps({'answer': 6 * 7}))"], { name: "ready" });
    expect(r.stderr).toBe("");
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toBe('ready {"answer": 42}\n');

    // containerd fetched the manifest and config from the registry, and no layer from anyone.
    const asked = registry.accessLog().slice(registryFrom);
    for (const layer of python.layers) expect(asked.filter((l) => l.method === "GET" && l.path.endsWith(`/blobs/${layer.digest}`))).toEqual([]);
    const compressed = python.layers.reduce((a, l) => a + l.size, 0);
    const served = (await lazyBytesServed()) - servedBefore + bootstraps;
    console.log(`lazy pull + start: the proxy served ${served} bytes (${bootstraps} of bootstraps) of a ${compressed}-byte image`);
    expect(served).toBeGreaterThan(0);
    expect(served).toBeLessThan(compressed / 3);
    expect(await snapshotter.metric("skiff_snapshotter_fetched_bytes_total", { image: refs.python })).toBeGreaterThan(0);
  }, 600_000);

  test("skiff pull, then ctr run --snapshotter skiff, on a host without kubelet", async () => {
    const pulled = await run(process.execPath, [SKIFF_BIN, "pull", refs.python2, "--address", cri.containerd.address], { timeoutMs: 300_000 });
    expect(pulled.stderr).toBe("");
    expect(pulled.code).toBe(0);
    expect(pulled.stdout).toBe(`${refs.python2} ${python.config.digest}\n`);
    const ran = await cri.containerd.ctr(["run", "--rm", "--snapshotter", "skiff", refs.python2, `ctr-run-${Date.now()}`, "python3", "-c", "print('from ctr', 6 * 7)"], { ns: "k8s.io", timeoutMs: 120_000 });
    expect(ran.stderr).toBe("");
    expect(ran.stdout).toBe("from ctr 42\n");
    expect(ran.code).toBe(0);
  }, 600_000);

  test("fail-open: an image with a layer the proxy won't convert is pulled through CRI and runs; the fallback is counted with its reason", async () => {
    const ordinaryBefore = await snapshotter.metric("skiff_snapshotter_layers_total", { kind: "ordinary" });
    expect(await cri.pullImage(refs.fat)).toBeTruthy();
    // The python layer is shared and already there; the big one is unpacked by containerd.
    expect(await snapshotter.metric("skiff_snapshotter_layers_total", { kind: "ordinary", reason: "not convertible" })).toBeGreaterThan(0);
    expect(await snapshotter.metric("skiff_snapshotter_layers_total", { kind: "ordinary" })).toBeGreaterThan(ordinaryBefore);
    const r = await cri.runContainer(pod, refs.fat, ["python3", "-c", "import os; print(os.path.getsize('/opt/big.bin'))"], { name: "fat" });
    expect(r.stdout).toBe(`${90 * 2 ** 20}\n`);
    expect(r.exitCode).toBe(0);
    // A plain `ctr image pull` sets no labels: every layer is ordinary, in another namespace too.
    const pulled = await cri.containerd.ctr(["image", "pull", "--plain-http", "--snapshotter", "skiff", refs.fat], { ns: "plain", timeoutMs: 300_000 });
    expect(pulled.code, pulled.stderr).toBe(0);
    const ran = await cri.containerd.ctr(["run", "--rm", "--snapshotter", "skiff", refs.fat, `plain-${Date.now()}`, "python3", "-c", "print('plain')"], { ns: "plain", timeoutMs: 120_000 });
    expect(ran.stdout).toBe("plain\n");
  }, 600_000);

  test("kill -9 of the snapshotter while a container reads its files: the container's output is right, and the snapshots are intact after the restart", async () => {
    const script = walkScript("[d for d in os.listdir('/usr/lib') if d.startswith('python3.')][0]");
    const snapshotsBefore = await cri.containerd.ctr(["snapshots", "--snapshotter", "skiff", "ls"], { ns: "k8s.io" });
    const id = await cri.createContainer(pod, { name: "reader", image: refs.python, command: ["python3", "-c", script] });
    await cri.startContainer(id);
    await new Promise((r) => setTimeout(r, 700));
    await snapshotter.kill();
    await new Promise((r) => setTimeout(r, 1_000));
    await snapshotter.restart();
    const status = await cri.waitForExit(id, 300_000);
    // containerd dials the socket again on its own schedule (gRPC backoff); until then its calls fail.
    await waitFor("containerd to reach the snapshotter again", async () => ((await cri.containerd.ctr(["snapshots", "--snapshotter", "skiff", "ls"], { ns: "k8s.io" })).code === 0 ? true : undefined), {
      timeoutMs: 60_000,
      intervalMs: 500,
    });
    const logs = await cri.readLogs(status.log_path);
    await cri.removeContainer(id);
    expect(logs.stderr).toBe("");
    expect(status.exit_code).toBe(0);
    // The same walk in a container that nothing disturbed.
    const undisturbed = await cri.runContainer(pod, refs.python, ["python3", "-c", script], { name: "reader-again", timeoutMs: 300_000 });
    expect(logs.stdout).toBe(undisturbed.stdout);
    expect(Number(logs.stdout.split(" ")[0])).toBeGreaterThan(500);
    const snapshotsAfter = await cri.containerd.ctr(["snapshots", "--snapshotter", "skiff", "ls"], { ns: "k8s.io" });
    const committed = (text: string) => text.split("\n").filter((l) => / Committed\s*$/.test(l)).sort();
    expect(committed(snapshotsAfter.stdout)).toEqual(committed(snapshotsBefore.stdout));
  }, 600_000);

  test("kill -9 of the mounts daemon while a container reads its files: the FUSE keeper holds the mounts, and the container's output is right", async () => {
    const script = walkScript("'x86_64-linux-gnu'", 10);
    const id = await cri.createContainer(pod, { name: "reader-daemon-kill", image: refs.python, command: ["python3", "-c", script] });
    await cri.startContainer(id);
    await new Promise((r) => setTimeout(r, 700));
    const daemon = snapshotter.daemonPid();
    expect(daemon).toBeGreaterThan(0);
    process.kill(daemon, "SIGKILL");
    // The kill landed mid-way.
    expect((await cri.containerStatus(id)).state).toBe("CONTAINER_RUNNING");
    const status = await cri.waitForExit(id, 300_000);
    const logs = await cri.readLogs(status.log_path);
    await cri.removeContainer(id);
    expect(logs.stderr).toBe("");
    expect(status.exit_code).toBe(0);
    // The snapshotter started a new daemon, which served the rest of the walk.
    expect(snapshotter.daemonPid()).not.toBe(daemon);
    const undisturbed = await cri.runContainer(pod, refs.python, ["python3", "-c", script], { name: "reader-daemon-again", timeoutMs: 300_000 });
    expect(logs.stdout).toBe(undisturbed.stdout);
    expect(Number(logs.stdout.split(" ")[0])).toBeGreaterThan(100);
  }, 600_000);
});

/**
 * A program that reads every file under /usr/lib/<dir> (mostly not read before; `dirExpr` is a
 * Python expression for dir) and prints their count and one hash of names and contents, pausing
 * 50 ms every `pauseEvery` files, so that a kill lands mid-way.
 */
function walkScript(dirExpr: string, pauseEvery = 200): string {
  return [
    "import hashlib, os, sys, time",
    "h = hashlib.sha256(); n = 0",
    `root = ${dirExpr}`,
    "for dirpath, dirs, files in sorted(os.walk('/usr/lib/' + root)):",
    "    dirs.sort()",
    "    for f in sorted(files):",
    "        p = os.path.join(dirpath, f)",
    "        if os.path.islink(p) or not os.path.isfile(p): continue",
    "        h.update(p.encode()); h.update(open(p, 'rb').read()); n += 1",
    `        if n % ${pauseEvery} == 0: time.sleep(0.05)`,
    "print(n, h.hexdigest())",
  ].join("\n");
}
