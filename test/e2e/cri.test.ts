// containerd driven over CRI exactly as the kubelet drives it: PullImage from the test's registry,
// RunPodSandbox (sandbox image built here, CNI bridge network), CreateContainer + StartContainer of a
// python3 one-liner, its exit code and its output read from the CRI log file, and a cleanup that
// leaves nothing on the host. Runs on containerd's own overlayfs snapshotter; the harness takes a
// proxy snapshotter (skiff's) the same way.
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { Registry } from "./harness/registry.ts";
import { OciLayout, pushImage } from "./harness/images.ts";
import { buildDebianPythonImage, buildPauseImage, type DebianImage } from "./harness/cri-images.ts";
import { CriRuntime, type Pod } from "./harness/cri.ts";
import { tempDir } from "./harness/workdir.ts";
import { teardown } from "./harness/teardown.ts";

let registry: Registry;
let cri: CriRuntime;
let python: DebianImage;
let pythonRef: string;
let pod: Pod;

beforeAll(async () => {
  registry = await Registry.start({ name: "cri-registry" });
  const layout = new OciLayout(tempDir("cri-layout"));
  await buildPauseImage(layout, "pause");
  python = await buildDebianPythonImage(layout, "python");
  if (python.buildSeconds > 0) console.log(`debootstrap image built in ${python.buildSeconds.toFixed(0)} s`);
  await pushImage(layout, "pause", `${registry.hostPort}/e2e/pause:1`);
  pythonRef = `${registry.hostPort}/e2e/python:1`;
  await pushImage(layout, "python", pythonRef);
  cri = await CriRuntime.start({
    sandboxImage: `${registry.hostPort}/e2e/pause:1`,
    plainHttpRegistries: [registry.hostPort],
    snapshotter: "overlayfs",
  });
}, 900_000);

afterAll(async () => {
  await cri?.stop();
  await registry?.stop();
  await teardown();
});

describe("containerd's CRI plugin, driven like the kubelet", () => {
  test("Version answers the v1 API", async () => {
    const v = await cri.version();
    expect(v.runtime_name).toBe("containerd");
    expect(v.runtime_api_version).toBe("v1");
  });

  test("PullImage fetches the python image from the local registry into the snapshotter", async () => {
    const before = await registry.settledRequestCount();
    const imageRef = await cri.pullImage(pythonRef);
    expect(imageRef).toBe(python.config.digest);
    const pulled = registry.accessLog().slice(before);
    expect(pulled.some((l) => l.method === "GET" && l.path.endsWith(`/blobs/${python.layers[0]!.digest}`) && l.status === 200)).toBe(true);
    const listed = (await cri.listImages()).find((i) => i.id === python.config.digest);
    expect(listed?.repo_tags).toContain(pythonRef);
    expect(listed?.repo_digests).toContain(`${registry.hostPort}/e2e/python@${python.manifest.digest}`);
    const snapshots = await cri.containerd.ctr(["snapshots", "--snapshotter", cri.snapshotter, "ls"], { ns: "k8s.io" });
    expect(snapshots.code).toBe(0);
    expect(snapshots.stdout).toContain(python.layers[0]!.diffId); // one layer: its chain ID is its diff ID
  }, 300_000);

  test("RunPodSandbox starts a pod on the bridge network (sandbox image pulled by containerd)", async () => {
    pod = await cri.runPod("hello");
    expect(pod.ip).toMatch(/^10\.\d+\.\d+\.\d+$/);
    expect(pod.ip.split(".").slice(0, 3).join(".")).toBe(cri.subnet.split(".").slice(0, 3).join("."));
    expect((await cri.listImages()).some((i) => i.repo_tags.includes(`${registry.hostPort}/e2e/pause:1`))).toBe(true);
  }, 180_000);

  test("a python3 container runs to completion and its output is in its CRI log", async () => {
    const r = await cri.runContainer(pod, pythonRef, [
      "python3",
      "-c",
      "import sys, platform; print('hello from', platform.python_implementation(), 6 * 7); print('to stderr', file=sys.stderr)",
    ]);
    expect(r.exitCode).toBe(0);
    expect(r.reason).toBe("Completed");
    expect(r.stdout).toBe("hello from CPython 42\n");
    expect(r.stderr).toBe("to stderr\n");
  }, 120_000);

  test("a failing container reports its exit code", async () => {
    const r = await cri.runContainer(pod, pythonRef, ["python3", "-c", "print('bye'); raise SystemExit(3)"], { name: "fails" });
    expect(r.exitCode).toBe(3);
    expect(r.reason).toBe("Error");
    expect(r.logs).toBe("bye\n");
  }, 120_000);

  test("RemovePodSandbox and RemoveImage, then stop() leaves nothing on the host", async () => {
    await cri.removePod(pod);
    expect(await cri.listPods()).toEqual([]);
    await cri.removeImage(pythonRef);
    expect((await cri.listImages()).some((i) => i.id === python.config.digest)).toBe(false);
    await cri.stop();
    expect(await cri.leftovers()).toEqual({ bridge: false, cgroups: [], processes: [], shimSockets: [], mounts: [], dir: false, cniResults: [] });
  }, 180_000);
});
