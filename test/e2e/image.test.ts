// skiff's container image under containerd. deploy/image/build.sh builds it from this checkout
// with buildah; a private containerd imports the archive and `ctr run` starts it the way the
// Kubernetes manifest does (the image's entrypoint followed by the Deployment's args, the config
// file where the ConfigMap is mounted, the store on a volume, a read-only root, seccomp), with a
// real registry as its upstream; skopeo pulls through it. Host networking, loopback only.
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { chmodSync, chownSync, mkdirSync, readFileSync, rmdirSync, statSync, writeFileSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { Registry } from "./harness/registry.ts";
import { Containerd } from "./harness/containerd.ts";
import { OciLayout, buildImage, pushImage, type ImageInfo } from "./harness/images.ts";
import { skopeoCopy, skopeoImageConfig } from "./harness/skopeo.ts";
import { compareTrees, listAllPaths } from "./harness/files.ts";
import { testCacheDir } from "./harness/cri-images.ts";
import { BUILD_SCRIPT, REPO, loadSkiffManifest } from "./harness/manifests.ts";
import { childEnv, freePort, runOk, sleep, waitFor } from "./harness/processes.ts";
import { tempDir } from "./harness/workdir.ts";
import { teardown } from "./harness/teardown.ts";

const NS = "skiff-image";
const ID = "skiff";
// The container's own cgroup, unique so that runs on one host never share it; removed afterwards.
const CGROUP = `/skiff-e2e-image-${randomBytes(4).toString("hex")}`;
const manifest = loadSkiffManifest();
const version = (JSON.parse(readFileSync(join(REPO, "package.json"), "utf8")) as { version: string }).version;

let archive: string;
let buildSeconds: number;
let registry: Registry;
let containerd: Containerd;
let upstreamImage: ImageInfo;
let imageConfig: { config: Record<string, any>; rootfs: { diff_ids: string[] }; history: { created_by?: string }[] };
let port: number;
let storeDir: string;
let pidFile: string;
let taskLog: string;
let started = false;

const ctr = (args: string[], timeoutMs = 60_000) => containerd.ctr(args, { ns: NS, timeoutMs });

/** The task's status in `ctr task ls` (RUNNING, STOPPED, …), or undefined when there is none. */
async function taskStatus(): Promise<string | undefined> {
  const r = await ctr(["task", "ls"], 15_000);
  return r.stdout.split("\n").map((l) => l.trim().split(/\s+/)).find((f) => f[0] === ID)?.[2];
}

function log(): string {
  try {
    return readFileSync(taskLog, "utf8").slice(-3000);
  } catch {
    return "(no log)";
  }
}

/** Remove the (empty, once its task is gone) cgroup `path` from every cgroup hierarchy. */
function removeCgroup(path: string): void {
  const hierarchies = readFileSync("/proc/self/mounts", "utf8")
    .split("\n")
    .map((l) => l.split(" "))
    .filter((f) => f[2] === "cgroup" || f[2] === "cgroup2")
    .map((f) => f[1]!);
  for (const h of hierarchies) {
    try {
      rmdirSync(join(h, path));
    } catch {
      /* not made in this hierarchy, or already gone */
    }
  }
}

beforeAll(async () => {
  // 1. The image, as a user builds it; the base and Node stay in the test cache for later runs.
  archive = join(tempDir("image"), "skiff-image.tar");
  const t0 = performance.now();
  await runOk("bash", [BUILD_SCRIPT, archive], {
    cwd: REPO,
    env: childEnv({ SKIFF_IMAGE_CACHE: join(testCacheDir(), "image") }),
    timeoutMs: 15 * 60_000,
  });
  buildSeconds = (performance.now() - t0) / 1000;
  console.error(`image built in ${buildSeconds.toFixed(0)} s: ${(statSync(archive).size / 2 ** 20).toFixed(1)} MiB`);
  imageConfig = (await skopeoImageConfig(`oci-archive:${archive}`)) as typeof imageConfig;

  // 2. An upstream with an image to pull, and a containerd holding skiff's image.
  registry = await Registry.start({ name: "image-registry" });
  const layout = new OciLayout(tempDir("image-layout"));
  upstreamImage = buildImage(layout, { tag: "v1", seed: "skiff-image", layers: 3, filesPerLayer: 3, fileSize: 64 * 1024 });
  await pushImage(layout, "v1", `${registry.hostPort}/e2e/app:v1`);
  containerd = await Containerd.start();
  const imported = await ctr(["image", "import", "--snapshotter", containerd.snapshotter, archive], 300_000);
  expect(imported.code, imported.stderr).toBe(0);

  // 3. What the pod gets: the ConfigMap's config with the test's registry as the one upstream, and
  //    a store volume owned by the image's user (fsGroup's job in the cluster).
  const configDir = tempDir("image-config");
  const config = JSON.parse(manifest.configMap.data[manifest.configKey]) as Record<string, unknown>;
  writeFileSync(join(configDir, manifest.configKey), JSON.stringify({ ...config, upstreams: { upstream: { url: registry.url } }, defaultUpstream: "upstream" }), { mode: 0o644 });
  chmodSync(configDir, 0o755); // as readable as a ConfigMap volume
  storeDir = tempDir("image-store");
  const [uid, gid] = String(imageConfig.config.User).split(":").map(Number);
  chownSync(storeDir, uid!, gid!);
  port = await freePort();
  pidFile = join(containerd.dir, "skiff.pid");
  taskLog = join(containerd.dir, "skiff.log");
  mkdirSync(join(containerd.dir, "fifo"), { recursive: true });

  // The kubelet's command line: the image's entrypoint, then the container's args. The test adds
  // flags that keep the host-network container on loopback and off ports others may use.
  const argv = [
    ...(imageConfig.config.Entrypoint as string[]),
    ...(manifest.container.args as string[]),
    ...["--host", "127.0.0.1", "--port", String(port), "--metrics-address", "127.0.0.1:0"],
  ];
  const r = await ctr(
    [
      "run", "--detach", "--net-host", "--read-only", "--seccomp",
      "--snapshotter", containerd.snapshotter,
      "--runc-root", join(containerd.dir, "runc"),
      "--cgroup", CGROUP,
      "--fifo-dir", join(containerd.dir, "fifo"),
      "--log-uri", `file://${taskLog}`,
      "--pid-file", pidFile,
      "--mount", `type=bind,src=${storeDir},dst=${manifest.storeMountPath},options=rbind:rw`,
      "--mount", `type=bind,src=${configDir},dst=${manifest.configMountPath},options=rbind:ro`,
      `skiff:${version}`, ID, ...argv,
    ],
    120_000,
  );
  expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(0);
  started = true;
  const ready = await waitFor(
    "skiff in its container to be ready",
    async () => {
      if ((await taskStatus()) !== "RUNNING") return "stopped";
      const res = await fetch(`http://127.0.0.1:${port}${manifest.container.readinessProbe.httpGet.path}`, { signal: AbortSignal.timeout(2_000) });
      return res.status === 200 ? "ready" : undefined;
    },
    { timeoutMs: 60_000, intervalMs: 250 },
  ).catch((err: Error) => err.message);
  if (ready !== "ready") throw new Error(`skiff's container is not ready (${ready}); its log:\n${log()}`);
}, 20 * 60_000);

afterAll(async () => {
  if (started) {
    // Bounded: each ctr call has its own time limit; a task that is already gone only fails them.
    await ctr(["task", "kill", "--signal", "SIGKILL", ID], 15_000).catch(() => undefined);
    for (let i = 0; i < 20 && ((await taskStatus().catch(() => undefined)) ?? "STOPPED") !== "STOPPED"; i++) await sleep(250);
    await ctr(["task", "delete", "--force", ID], 30_000).catch(() => undefined);
    await ctr(["container", "delete", ID], 30_000).catch(() => undefined);
    removeCgroup(CGROUP);
  }
  await containerd?.stop();
  await registry?.stop();
  await teardown();
}, 120_000);

describe("the skiff image", () => {
  test("is built with the documented settings: non-root user, entrypoint, store volume, port, one malloc arena, labels", () => {
    const c = imageConfig.config;
    expect(c.User).toBe("10001:10001");
    expect(c.Entrypoint).toEqual(["/usr/local/bin/node", "/opt/skiff/bin/skiff.js", "serve", "--data", "/var/lib/skiff", "--host", "0.0.0.0", "--port", "8080"]);
    expect(Object.keys(c.Volumes ?? {})).toEqual(["/var/lib/skiff"]);
    expect(Object.keys(c.ExposedPorts ?? {})).toEqual(["8080/tcp"]);
    // One malloc arena for the server, as bin/skiff gives `skiff serve`.
    expect(c.Env).toContain("MALLOC_ARENA_MAX=1");
    expect(c.Labels).toMatchObject({ "org.opencontainers.image.title": "skiff", "org.opencontainers.image.version": version });
    // Base, Node, skiff: one layer each; nothing was run to make them.
    expect(imageConfig.rootfs.diff_ids).toHaveLength(3);
    expect(imageConfig.history.filter((h) => /\bRUN\b/.test(h.created_by ?? ""))).toEqual([]);
    expect(statSync(archive).size).toBeLessThan(100 * 2 ** 20);
  });

  test("runs under containerd as a non-root process without capabilities, and a pull through it is byte-identical", async () => {
    const status = readFileSync(`/proc/${readFileSync(pidFile, "utf8").trim()}/status`, "utf8");
    const field = (name: string) => new RegExp(`^${name}:\\s*(.*)$`, "m").exec(status)?.[1]?.split(/\s+/);
    expect(field("Uid")).toEqual(["10001", "10001", "10001", "10001"]);
    expect(field("Gid")).toEqual(["10001", "10001", "10001", "10001"]);
    expect(field("CapEff")).toEqual(["0000000000000000"]);
    expect(field("NoNewPrivs")).toEqual(["1"]);

    const direct = tempDir("image-direct");
    await skopeoCopy(`docker://${registry.hostPort}/e2e/app:v1`, `dir:${direct}`);
    const logBefore = await registry.settledRequestCount();
    const viaSkiff = tempDir("image-via-skiff");
    await skopeoCopy(`docker://127.0.0.1:${port}/e2e/app:v1`, `dir:${viaSkiff}`);
    const diff = compareTrees(direct, viaSkiff);
    expect(diff.onlyInA).toEqual([]);
    expect(diff.onlyInB).toEqual([]);
    expect(diff.different).toEqual([]);
    expect(diff.same).toContain("manifest.json");
    expect(diff.same.length).toBe(upstreamImage.layers.length + 3); // + manifest, config, version

    // The layers came from the registry through skiff, which kept them in the store volume, as
    // files of the image's user.
    await registry.settledRequestCount();
    const fetched = registry.accessLog().slice(logBefore).filter((l) => l.method === "GET" && l.path.includes("/blobs/"));
    for (const l of upstreamImage.layers) expect(fetched.some((x) => x.path.endsWith(l.digest)), l.digest).toBe(true);
    const stored = listAllPaths(storeDir);
    expect(stored.filter((p) => statSync(p).isFile()).length).toBeGreaterThanOrEqual(upstreamImage.layers.length);
    for (const p of stored) expect(statSync(p).uid, p).toBe(10001);
  }, 180_000);

  test("answers the liveness probe, and stops as Kubernetes stops it (preStop, SIGTERM) within the grace period", async () => {
    const live = await fetch(`http://127.0.0.1:${port}${manifest.container.livenessProbe.httpGet.path}`, { signal: AbortSignal.timeout(5_000) });
    expect(live.status).toBe(200);

    const grace = Number(manifest.pod.terminationGracePeriodSeconds);
    const t0 = performance.now();
    const preStop = manifest.container.lifecycle.preStop.exec.command as string[];
    const hook = await ctr(["task", "exec", "--exec-id", "prestop", ID, ...preStop], grace * 1000);
    expect(hook.code, `${hook.stdout}\n${hook.stderr}`).toBe(0);
    const kill = await ctr(["task", "kill", "--signal", "SIGTERM", ID], 15_000);
    expect(kill.code, kill.stderr).toBe(0);
    await waitFor("the task to stop", async () => ((await taskStatus()) === "STOPPED" ? true : undefined), { timeoutMs: grace * 1000, intervalMs: 250 });
    expect((performance.now() - t0) / 1000).toBeLessThan(grace);
    // `ctr task delete` warns when the task exited with another status than 0.
    const deleted = await ctr(["task", "delete", ID], 30_000);
    expect(deleted.code, deleted.stderr).toBe(0);
    expect(deleted.stderr, log()).not.toMatch(/non-zero exit code/);
    expect(log()).toMatch(/SIGTERM: shutting down/); // node, as the container's PID 1, handled it
  }, 120_000);
});
