// containerd driven the way the kubelet drives it: a private containerd with the CRI plugin on (a
// CNI bridge network of its own, a sandbox image, the snapshotter named by the test, plain-http
// registries through hosts.toml) and a CRI client (runtime.v1, cri-api.proto) over its socket that
// pulls images and runs pods and containers. stop() removes everything that was made: pods and
// containers through CRI, then containerd, whatever outlived it (container processes, shims),
// mounts, the bridge, the cgroups and CNI's cache entries.
//
//   const cri = await CriRuntime.start({ sandboxImage: `${reg}/e2e/pause:1`, plainHttpRegistries: [reg] });
//   await cri.pullImage(`${reg}/e2e/python:1`);
//   const pod = await cri.runPod("hello");
//   const { exitCode, stdout } = await cri.runContainer(pod, `${reg}/e2e/python:1`, ["python3", "-c", "print(1)"]);
//   await cri.stop();
//
// A proxy snapshotter (skiff's) is one option: `snapshotter: { name: "skiff", address: SOCKET }`.
import { spawnSync } from "node:child_process";
import { createHash, randomBytes, randomUUID } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, rmdirSync, statSync, writeFileSync } from "node:fs";
import { basename, join } from "node:path";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { cniBridgeConflist, DEBIAN_CNI_BIN_DIR } from "../../../bench/containerd-config.mjs";
import { Containerd, writePlainHttpHostsToml } from "./containerd.ts";
import { run, sleep, waitFor } from "./processes.ts";
import { mountsUnder, tempDir } from "./workdir.ts";

const PROTO = fileURLToPath(new URL("./cri-api.proto", import.meta.url));
/** The containerd namespace the CRI plugin keeps its images, containers and snapshots in. */
export const CRI_NAMESPACE = "k8s.io";
/** libcni's cache of results (containerd 1.6 leaves it at the default). */
const CNI_RESULTS_DIR = "/var/lib/cni/results";

export interface CriOptions {
  /** The pods' sandbox ("pause") image, a reference containerd can pull. */
  sandboxImage: string;
  /** Registries (`host:port`) reached over plain http. */
  plainHttpRegistries?: string[];
  /**
   * The snapshotter CRI unpacks images into and runs containers on: a built-in one by name
   * (default "overlayfs"), or a proxy snapshotter by name and socket.
   */
  snapshotter?: string | { name: string; address: string };
  /** The CNI plugins (default Debian's /usr/lib/cni). */
  cniBinDir?: string;
}

export interface Pod {
  id: string;
  name: string;
  /** The PodSandboxConfig it was created with (CreateContainer and PullImage send it again). */
  config: PodSandboxConfig;
  logDirectory: string;
  /** Its address on the bridge network. */
  ip: string;
}

export interface ContainerSpec {
  name?: string;
  image: string;
  command: string[];
  args?: string[];
  env?: Record<string, string>;
  workingDir?: string;
}

export interface ContainerRun {
  containerId: string;
  exitCode: number;
  /** The container's state's reason (e.g. "Completed", "Error", "OOMKilled"). */
  reason: string;
  stdout: string;
  stderr: string;
  /** stdout and stderr interleaved as the log file has them. */
  logs: string;
  logPath: string;
}

// ---- messages, as @grpc/proto-loader presents them (keepCase, enums as strings, int64 as strings) ----

type NamespaceMode = "POD" | "CONTAINER" | "NODE" | "TARGET";

export interface PodSandboxConfig {
  metadata: { name: string; uid: string; namespace: string; attempt: number };
  hostname: string;
  log_directory: string;
  labels: Record<string, string>;
  annotations: Record<string, string>;
  linux: {
    cgroup_parent: string;
    security_context: { namespace_options: { network: NamespaceMode; pid: NamespaceMode; ipc: NamespaceMode } };
  };
}

export interface ContainerStatus {
  id: string;
  state: "CONTAINER_CREATED" | "CONTAINER_RUNNING" | "CONTAINER_EXITED" | "CONTAINER_UNKNOWN";
  exit_code: number;
  reason: string;
  message: string;
  log_path: string;
  image: { image: string };
  image_ref: string;
}

export interface PodSandboxStatus {
  id: string;
  state: "SANDBOX_READY" | "SANDBOX_NOTREADY";
  network: { ip: string } | null;
}

export interface CriImage {
  id: string;
  repo_tags: string[];
  repo_digests: string[];
  size: string;
}

export interface CriVersion {
  version: string;
  runtime_name: string;
  runtime_version: string;
  runtime_api_version: string;
}

/** A failed CRI call, with its gRPC status code. */
export class CriError extends Error {
  constructor(
    readonly method: string,
    readonly code: number,
    details: string,
  ) {
    super(`CRI ${method}: ${grpc.status[code] ?? code}: ${details}`);
  }
}

type Callback = (err: grpc.ServiceError | null, response: unknown) => void;
type UnaryMethod = (request: object, metadata: grpc.Metadata, options: grpc.CallOptions, callback: Callback) => void;

interface CriPackage {
  runtime: { v1: { RuntimeService: grpc.ServiceClientConstructor; ImageService: grpc.ServiceClientConstructor } };
}

let criPackage: CriPackage | undefined;
function loadCri(): CriPackage {
  criPackage ??= grpc.loadPackageDefinition(
    protoLoader.loadSync(PROTO, { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true }),
  ) as unknown as CriPackage;
  return criPackage;
}

function unary<T>(client: grpc.Client, method: string, request: object, timeoutMs: number): Promise<T> {
  const fn = (client as unknown as Record<string, UnaryMethod>)[method];
  if (typeof fn !== "function") return Promise.reject(new Error(`no CRI method ${method}`));
  return new Promise((resolve, reject) => {
    fn.call(client, request, new grpc.Metadata(), { deadline: Date.now() + timeoutMs }, (err, response) => {
      if (err !== null) reject(new CriError(method, err.code, err.details || err.message));
      else resolve(response as T);
    });
  });
}

/**
 * A CRI container log (one line per write: `<RFC 3339 time> <stdout|stderr> <F|P> <text>`, P for a
 * partial line continued by the next) back into the text each stream carried.
 */
export function parseCriLog(text: string): { stdout: string; stderr: string; logs: string } {
  const out = { stdout: "", stderr: "", logs: "" };
  for (const line of text.split("\n")) {
    if (line === "") continue;
    const m = /^(\S+) (stdout|stderr) ([FP])(?: (.*))?$/s.exec(line);
    if (m === null) throw new Error(`not a CRI log line: ${JSON.stringify(line.slice(0, 200))}`);
    const piece = (m[4] ?? "") + (m[3] === "F" ? "\n" : "");
    out[m[2] as "stdout" | "stderr"] += piece;
    out.logs += piece;
  }
  return out;
}

// ---- the host's side: a free subnet, cgroups, processes ----

function parseCidr(s: string): { net: number; bits: number } | undefined {
  const m = /^(\d+)\.(\d+)\.(\d+)\.(\d+)(?:\/(\d+))?$/.exec(s);
  if (m === null) return undefined;
  const bits = m[5] === undefined ? 32 : Number(m[5]);
  const addr = ((Number(m[1]) << 24) | (Number(m[2]) << 16) | (Number(m[3]) << 8) | Number(m[4])) >>> 0;
  const mask = bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
  return { net: (addr & mask) >>> 0, bits };
}

function overlaps(a: { net: number; bits: number }, b: { net: number; bits: number }): boolean {
  const bits = Math.min(a.bits, b.bits);
  const mask = bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
  return ((a.net & mask) >>> 0) === ((b.net & mask) >>> 0);
}

/** A random 10.x.y.0/24 (x in 200–254) that no route or address of this host overlaps. */
async function freeSubnet(): Promise<string> {
  const taken: { net: number; bits: number }[] = [];
  for (const args of [["-j", "-4", "route", "show", "table", "all"], ["-j", "-4", "addr", "show"]]) {
    const r = await run("ip", args, { timeoutMs: 10_000 });
    if (r.code !== 0) throw new Error(`ip ${args.join(" ")} failed: ${r.stderr}`);
    const entries = JSON.parse(r.stdout || "[]") as { dst?: string; addr_info?: { local?: string; prefixlen?: number }[] }[];
    for (const e of entries) {
      const dst = e.dst !== undefined && e.dst !== "default" ? parseCidr(e.dst) : undefined;
      if (dst !== undefined) taken.push(dst);
      for (const a of e.addr_info ?? []) {
        const c = a.local !== undefined ? parseCidr(`${a.local}/${a.prefixlen ?? 32}`) : undefined;
        if (c !== undefined) taken.push(c);
      }
    }
  }
  for (let i = 0; i < 100; i++) {
    const b = randomBytes(2);
    const subnet = `10.${200 + (b[0]! % 55)}.${b[1]!}.0/24`;
    const c = parseCidr(subnet)!;
    if (!taken.some((t) => overlaps(t, c))) return subnet;
  }
  throw new Error("no free 10.x.y.0/24 subnet for the pods");
}

/** The mount points of this host's cgroup hierarchies (v1 controllers and v2). */
function cgroupMounts(): string[] {
  return readFileSync("/proc/self/mounts", "utf8")
    .split("\n")
    .map((l) => l.split(" "))
    .filter((f) => f[2] === "cgroup" || f[2] === "cgroup2")
    .map((f) => f[1]!);
}

/** Every directory of the cgroup `path` (e.g. "/skiff-e2e-1a2b3c4d") in every hierarchy, deepest first. */
function cgroupDirs(path: string): string[] {
  const dirs: string[] = [];
  const visit = (dir: string, depth: number) => {
    if (depth > 8) return;
    let names: string[];
    try {
      names = readdirSync(dir, { withFileTypes: true }).filter((d) => d.isDirectory()).map((d) => d.name);
    } catch {
      return;
    }
    for (const n of names) visit(join(dir, n), depth + 1);
    dirs.push(dir);
  };
  for (const m of cgroupMounts()) if (existsSync(join(m, path))) visit(join(m, path), 0);
  return dirs;
}

/** The processes in the cgroup `path` and below, in any hierarchy. */
function cgroupPids(path: string): number[] {
  const pids = new Set<number>();
  for (const dir of cgroupDirs(path)) {
    try {
      for (const p of readFileSync(join(dir, "cgroup.procs"), "utf8").split("\n")) if (/^\d+$/.test(p)) pids.add(Number(p));
    } catch {
      /* gone meanwhile */
    }
  }
  return [...pids];
}

/** containerd shims serving the containerd at `address` (their command line names its socket). */
function shims(address: string): { pid: number; namespace: string; id: string }[] {
  const found: { pid: number; namespace: string; id: string }[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const argv = readFileSync(join("/proc", entry, "cmdline"), "utf8").split("\0");
      if (!basename(argv[0] ?? "").startsWith("containerd-shim")) continue;
      const arg = (name: string) => {
        const i = argv.indexOf(name);
        return i >= 0 ? (argv[i + 1] ?? "") : "";
      };
      if (arg("-address") === address) found.push({ pid: Number(entry), namespace: arg("-namespace"), id: arg("-id") });
    } catch {
      /* exited meanwhile */
    }
  }
  return found;
}

/**
 * The socket a containerd 1.6 shim listens on: /run/containerd/s/<sha256 of "ADDRESS/NAMESPACE/ID">,
 * whatever containerd's own state directory. A shim removes it when it exits, but not when killed.
 */
function shimSocket(address: string, namespace: string, id: string): string {
  return join("/run/containerd/s", createHash("sha256").update(join(address, namespace, id)).digest("hex"));
}

/** Kill `pids` and the shims of `address`, and remove the sockets the killed shims leave behind. */
function killProcessesAndShims(pids: number[], address: string): number {
  const found = shims(address);
  killPids([...pids, ...found.map((s) => s.pid)]);
  for (const s of found) rmSync(shimSocket(address, s.namespace, s.id), { force: true });
  return pids.length + found.length;
}

function killPids(pids: number[]): void {
  for (const pid of pids) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      /* already gone */
    }
  }
}

const liveRuntimes = new Set<CriRuntime>();
let hooksInstalled = false;

/** Last resort on exit and on signals (which give no time to wait): kill what the runtimes left running. */
function installHooks(): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  process.once("exit", () => {
    for (const r of liveRuntimes) r.killSync();
  });
  for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
    process.once(sig, () => {
      for (const r of liveRuntimes) r.killSync();
      // Die of the signal unless another handler (the harness teardown's) is still to run.
      if (process.listenerCount(sig) === 0) process.kill(process.pid, sig);
    });
  }
}

export class CriRuntime {
  readonly containerd: Containerd;
  readonly snapshotter: string;
  /** The CNI network's name, its Linux bridge and its subnet. */
  readonly network: string;
  readonly bridge: string;
  readonly subnet: string;
  /** The cgroup every pod is placed under (CRI's cgroup_parent, the cgroupfs driver's absolute path). */
  readonly cgroupParent: string;
  private readonly runtime: grpc.Client;
  private readonly images: grpc.Client;
  private readonly sandboxIds = new Set<string>();
  private readonly cniResultsExisted: boolean;
  private stopped = false;

  private constructor(containerd: Containerd, o: { snapshotter: string; token: string; subnet: string; cniResultsExisted: boolean }) {
    this.containerd = containerd;
    this.snapshotter = o.snapshotter;
    this.network = `skiff-e2e-${o.token}`;
    this.bridge = `skf${o.token}`;
    this.subnet = o.subnet;
    this.cgroupParent = `/skiff-e2e-${o.token}`;
    this.cniResultsExisted = o.cniResultsExisted;
    const pkg = loadCri().runtime.v1;
    const target = `unix://${containerd.address}`;
    this.runtime = new pkg.RuntimeService(target, grpc.credentials.createInsecure());
    this.images = new pkg.ImageService(target, grpc.credentials.createInsecure());
  }

  /** Start containerd with CRI and wait until CRI answers (at most `timeoutMs`). */
  static async start(options: CriOptions, { timeoutMs = 60_000 } = {}): Promise<CriRuntime> {
    const dir = tempDir("cri");
    const token = randomBytes(4).toString("hex");
    const subnet = await freeSubnet();
    const snapshotter = typeof options.snapshotter === "object" ? options.snapshotter.name : (options.snapshotter ?? "overlayfs");
    const hostsDir = join(dir, "certs.d");
    mkdirSync(hostsDir, { recursive: true });
    for (const r of options.plainHttpRegistries ?? []) writePlainHttpHostsToml(hostsDir, r);
    const cniConfDir = join(dir, "cni", "net.d");
    mkdirSync(cniConfDir, { recursive: true });
    writeFileSync(
      join(cniConfDir, "10-skiff-e2e.conflist"),
      cniBridgeConflist({ name: `skiff-e2e-${token}`, bridge: `skf${token}`, subnet, ipamDataDir: join(dir, "cni", "ipam") }),
    );
    const cniResultsExisted = existsSync(CNI_RESULTS_DIR);
    installHooks();
    let containerd: Containerd;
    try {
      containerd = await Containerd.start({
        dir,
        snapshotters: typeof options.snapshotter === "object" ? { [options.snapshotter.name]: options.snapshotter.address } : {},
        cri: {
          sandboxImage: options.sandboxImage,
          snapshotter,
          cniConfDir,
          cniBinDir: options.cniBinDir ?? DEBIAN_CNI_BIN_DIR,
          registryConfigPath: hostsDir,
        },
      });
    } catch (err) {
      rmSync(dir, { recursive: true, force: true, maxRetries: 3 }); // no pod can have run yet
      throw err;
    }
    const cri = new CriRuntime(containerd, { snapshotter, token, subnet, cniResultsExisted });
    liveRuntimes.add(cri);
    try {
      const v = await waitFor(
        "the CRI plugin to answer Version",
        async () => {
          if (!containerd.running) throw new Error("containerd exited");
          return await unary<CriVersion>(cri.runtime, "Version", { version: "v1" }, 5_000);
        },
        { timeoutMs, intervalMs: 200 },
      );
      if (v.runtime_api_version !== "v1") throw new Error(`CRI answers API ${v.runtime_api_version}, not v1`);
    } catch (err) {
      const log = cri.containerdErrors(20);
      await cri.stop();
      throw new Error(`${err instanceof Error ? err.message : String(err)}\ncontainerd's last errors:\n${log}`);
    }
    return cri;
  }

  /** A CRI call; a failure carries containerd's last error lines, which usually say more. */
  private async call<T>(client: grpc.Client, method: string, request: object, timeoutMs: number): Promise<T> {
    try {
      return await unary<T>(client, method, request, timeoutMs);
    } catch (err) {
      if (err instanceof CriError) err.message += `\ncontainerd's last errors:\n${this.containerdErrors()}`;
      throw err;
    }
  }

  /** The last error and warning lines of containerd's log. */
  containerdErrors(lines = 10): string {
    return this.containerd
      .log()
      .split("\n")
      .filter((l) => /level=(error|fatal|warning)/.test(l))
      .slice(-lines)
      .join("\n");
  }

  /** Where pods' logs go (inside containerd's directory). */
  get podsDir(): string {
    return join(this.containerd.dir, "pods");
  }

  version(timeoutMs = 10_000): Promise<CriVersion> {
    return this.call<CriVersion>(this.runtime, "Version", { version: "v1" }, timeoutMs);
  }

  // ---- images ----

  /** PullImage, as the kubelet sends it (with the pod's config when there is one); the image's id. */
  async pullImage(ref: string, { pod, timeoutMs = 300_000 }: { pod?: Pod; timeoutMs?: number } = {}): Promise<string> {
    const r = await this.call<{ image_ref: string }>(
      this.images,
      "PullImage",
      { image: { image: ref }, sandbox_config: pod?.config ?? null },
      timeoutMs,
    );
    return r.image_ref;
  }

  async listImages(timeoutMs = 30_000): Promise<CriImage[]> {
    const r = await this.call<{ images: CriImage[] }>(this.images, "ListImages", {}, timeoutMs);
    return r.images;
  }

  async removeImage(ref: string, timeoutMs = 60_000): Promise<void> {
    await this.call(this.images, "RemoveImage", { image: { image: ref } }, timeoutMs);
  }

  // ---- pods ----

  /** RunPodSandbox (pulling the sandbox image first if containerd lacks it): a ready pod with an address. */
  async runPod(name: string, { timeoutMs = 180_000 }: { timeoutMs?: number } = {}): Promise<Pod> {
    const uid = randomUUID();
    const namespace = "skiff-e2e";
    const logDirectory = join(this.podsDir, `${namespace}_${name}_${uid}`);
    mkdirSync(logDirectory, { recursive: true });
    const config: PodSandboxConfig = {
      metadata: { name, uid, namespace, attempt: 0 },
      hostname: name,
      log_directory: logDirectory,
      labels: { "io.kubernetes.pod.name": name, "io.kubernetes.pod.namespace": namespace, "io.kubernetes.pod.uid": uid },
      annotations: {},
      linux: {
        cgroup_parent: `${this.cgroupParent}/pod${uid}`,
        security_context: { namespace_options: { network: "POD", pid: "CONTAINER", ipc: "POD" } },
      },
    };
    const { pod_sandbox_id: id } = await this.call<{ pod_sandbox_id: string }>(this.runtime, "RunPodSandbox", { config }, timeoutMs);
    this.sandboxIds.add(id);
    const status = await this.podStatus(id);
    if (status.state !== "SANDBOX_READY") throw new Error(`pod ${name} is ${status.state} after RunPodSandbox`);
    return { id, name, config, logDirectory, ip: status.network?.ip ?? "" };
  }

  async podStatus(id: string, timeoutMs = 30_000): Promise<PodSandboxStatus> {
    const r = await this.call<{ status: PodSandboxStatus }>(this.runtime, "PodSandboxStatus", { pod_sandbox_id: id }, timeoutMs);
    return r.status;
  }

  /** Every pod sandbox containerd knows. */
  async listPods(timeoutMs = 30_000): Promise<{ id: string; state: string; metadata: { name: string } }[]> {
    const r = await this.call<{ items: { id: string; state: string; metadata: { name: string } }[] }>(this.runtime, "ListPodSandbox", {}, timeoutMs);
    return r.items;
  }

  /** StopPodSandbox then RemovePodSandbox (which also removes its containers), as the kubelet does. */
  async removePod(pod: Pod | string, timeoutMs = 60_000): Promise<void> {
    const id = typeof pod === "string" ? pod : pod.id;
    await this.call(this.runtime, "StopPodSandbox", { pod_sandbox_id: id }, timeoutMs);
    await this.call(this.runtime, "RemovePodSandbox", { pod_sandbox_id: id }, timeoutMs);
  }

  // ---- containers ----

  /** CreateContainer in `pod`; its log goes to `<pod log directory>/<name>_0.log`. */
  async createContainer(pod: Pod, spec: ContainerSpec, timeoutMs = 120_000): Promise<string> {
    const name = spec.name ?? "main";
    const config = {
      metadata: { name, attempt: 0 },
      image: { image: spec.image },
      command: spec.command,
      args: spec.args ?? [],
      working_dir: spec.workingDir ?? "",
      envs: Object.entries(spec.env ?? {}).map(([key, value]) => ({ key, value })),
      labels: { "io.kubernetes.container.name": name, "io.kubernetes.pod.name": pod.name, "io.kubernetes.pod.uid": pod.config.metadata.uid },
      annotations: {},
      log_path: `${name}_0.log`,
      linux: { security_context: { namespace_options: { network: "POD", pid: "CONTAINER", ipc: "POD" } } },
    };
    const r = await this.call<{ container_id: string }>(
      this.runtime,
      "CreateContainer",
      { pod_sandbox_id: pod.id, config, sandbox_config: pod.config },
      timeoutMs,
    );
    return r.container_id;
  }

  async startContainer(id: string, timeoutMs = 120_000): Promise<void> {
    await this.call(this.runtime, "StartContainer", { container_id: id }, timeoutMs);
  }

  async containerStatus(id: string, timeoutMs = 30_000): Promise<ContainerStatus> {
    const r = await this.call<{ status: ContainerStatus }>(this.runtime, "ContainerStatus", { container_id: id }, timeoutMs);
    return r.status;
  }

  /** StopContainer (SIGTERM, then SIGKILL after `graceSeconds`). */
  async stopContainer(id: string, graceSeconds = 0, timeoutMs = 60_000): Promise<void> {
    await this.call(this.runtime, "StopContainer", { container_id: id, timeout: String(graceSeconds) }, timeoutMs + graceSeconds * 1000);
  }

  async removeContainer(id: string, timeoutMs = 60_000): Promise<void> {
    await this.call(this.runtime, "RemoveContainer", { container_id: id }, timeoutMs);
  }

  /** Poll ContainerStatus until the container has exited (at most `timeoutMs`). */
  waitForExit(id: string, timeoutMs = 60_000): Promise<ContainerStatus> {
    return waitFor(
      `container ${id.slice(0, 12)} to exit`,
      async () => {
        const s = await this.containerStatus(id);
        return s.state === "CONTAINER_EXITED" ? s : undefined;
      },
      { timeoutMs, intervalMs: 100 },
    );
  }

  /**
   * A container's log file, parsed, once it has stopped growing: the CRI plugin copies the
   * container's output into it from a pipe, so the last lines can land just after the exit is seen.
   */
  async readLogs(logPath: string, { settleMs = 200, timeoutMs = 10_000 } = {}): Promise<{ stdout: string; stderr: string; logs: string }> {
    let last = -1;
    for (const started = Date.now(); Date.now() - started < timeoutMs; ) {
      const size = existsSync(logPath) ? statSync(logPath).size : -1;
      if (size >= 0 && size === last) break;
      last = size;
      await sleep(settleMs);
    }
    return parseCriLog(existsSync(logPath) ? readFileSync(logPath, "utf8") : "");
  }

  /**
   * Create and start a container running `command` in `pod`, wait for it to exit, read its log,
   * and remove it (unless `keep`).
   */
  async runContainer(
    pod: Pod,
    image: string,
    command: string[],
    o: Omit<ContainerSpec, "image" | "command"> & { timeoutMs?: number; keep?: boolean } = {},
  ): Promise<ContainerRun> {
    const id = await this.createContainer(pod, { ...o, image, command });
    try {
      await this.startContainer(id);
      const status = await this.waitForExit(id, o.timeoutMs ?? 60_000);
      const logPath = status.log_path !== "" ? status.log_path : join(pod.logDirectory, `${o.name ?? "main"}_0.log`);
      const logs = await this.readLogs(logPath);
      return { containerId: id, exitCode: status.exit_code, reason: status.reason, ...logs, logPath };
    } finally {
      if (o.keep !== true) {
        await this.stopContainer(id).catch(() => undefined);
        await this.removeContainer(id);
      }
    }
  }

  // ---- cleanup ----

  /**
   * Remove everything: every pod through CRI (while containerd runs), containerd, then whatever
   * outlived it: processes in the pods' cgroups, the shims, mounts under its directory, the bridge,
   * the cgroups, CNI's cache entries for its pods. Each step is bounded and runs even if the one
   * before failed; the first error is thrown at the end.
   */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    const errors: unknown[] = [];
    const step = async (f: () => Promise<void> | void) => {
      try {
        await f();
      } catch (err) {
        errors.push(err);
      }
    };
    if (this.containerd.running) {
      await step(async () => {
        for (const p of await this.listPods(10_000)) {
          this.sandboxIds.add(p.id);
          await this.removePod(p.id, 30_000).catch((err: unknown) => errors.push(err));
        }
      });
    }
    this.runtime.close();
    this.images.close();
    await step(() => this.containerd.stopDaemon());
    await step(async () => {
      // Container processes first (a shim's death would only orphan them), then the shims.
      for (let i = 0; i < 50; i++) {
        if (killProcessesAndShims(cgroupPids(this.cgroupParent), this.containerd.address) === 0) return;
        await sleep(100);
      }
      throw new Error(`processes of ${this.cgroupParent} or containerd's shims still running after 5 s`);
    });
    await step(() => this.containerd.stop()); // unmounts everything under its directory (rootfs, shm, netns), deletes it
    await step(() => this.deleteBridge());
    await step(() => this.removeCgroups());
    await step(() => this.removeCniResults());
    liveRuntimes.delete(this);
    if (errors.length > 0) throw errors[0];
  }

  private async deleteBridge(): Promise<void> {
    const shown = await run("ip", ["link", "show", "dev", this.bridge], { timeoutMs: 10_000 });
    if (shown.code !== 0) return; // never created (no pod ran) or gone
    const r = await run("ip", ["link", "delete", "dev", this.bridge], { timeoutMs: 10_000 });
    if (r.code !== 0) throw new Error(`cannot delete bridge ${this.bridge}: ${r.stderr}`);
  }

  private async removeCgroups(): Promise<void> {
    for (let i = 0; i < 20; i++) {
      if (this.rmdirCgroups()) return;
      await sleep(100);
    }
    throw new Error(`cgroup ${this.cgroupParent} could not be removed: ${cgroupDirs(this.cgroupParent).join(", ")}`);
  }

  /** One attempt at removing the pods' cgroups, deepest first; whether none is left. */
  private rmdirCgroups(): boolean {
    for (const d of cgroupDirs(this.cgroupParent)) {
      try {
        rmdirSync(d);
      } catch {
        /* still busy: the caller tries again */
      }
    }
    return cgroupDirs(this.cgroupParent).length === 0;
  }

  /** The entries of libcni's result cache that this runtime's pods made (their network's and their loopback's). */
  private cniResults(): string[] {
    if (!existsSync(CNI_RESULTS_DIR)) return [];
    const files = readdirSync(CNI_RESULTS_DIR);
    // `<network>-<sandbox id>-<interface>`: the sandbox ids of pods the CRI calls never reported.
    const ids = new Set(this.sandboxIds);
    for (const f of files) {
      const m = new RegExp(`^${this.network}-([0-9a-f]{64})-`).exec(f);
      if (m !== null) ids.add(m[1]!);
    }
    return files.filter((f) => f.startsWith(`${this.network}-`) || (f.startsWith("cni-loopback-") && [...ids].some((id) => f.includes(id))));
  }

  private removeCniResults(): void {
    for (const f of this.cniResults()) rmSync(join(CNI_RESULTS_DIR, f), { force: true });
    if (!this.cniResultsExisted) {
      // Made by this run's pods: remove it again if nothing else is in it.
      for (const d of [CNI_RESULTS_DIR, join(CNI_RESULTS_DIR, "..")]) {
        try {
          rmdirSync(d);
        } catch {
          break;
        }
      }
    }
  }

  /** What of this runtime is still on the host (all empty after stop()). */
  async leftovers(): Promise<{
    bridge: boolean;
    cgroups: string[];
    processes: number[];
    shimSockets: string[];
    mounts: string[];
    dir: boolean;
    cniResults: string[];
  }> {
    return {
      bridge: existsSync(join("/sys/class/net", this.bridge)),
      cgroups: cgroupDirs(this.cgroupParent),
      processes: [...cgroupPids(this.cgroupParent), ...shims(this.containerd.address).map((s) => s.pid)],
      shimSockets: [...this.sandboxIds].map((id) => shimSocket(this.containerd.address, CRI_NAMESPACE, id)).filter((p) => existsSync(p)),
      mounts: await mountsUnder(this.containerd.dir),
      dir: existsSync(this.containerd.dir),
      cniResults: this.cniResults(),
    };
  }

  /**
   * For exit and signal handlers, which cannot wait for promises: kill the pods' processes and the
   * shims, delete the bridge, CNI's cache entries and (after at most a second for the processes to
   * go) the cgroups. containerd itself and the mounts are the harness teardown's.
   */
  killSync(): void {
    for (let i = 0; i < 20; i++) {
      if (killProcessesAndShims(cgroupPids(this.cgroupParent), this.containerd.address) === 0) break;
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 50);
    }
    if (existsSync(join("/sys/class/net", this.bridge))) {
      spawnSync("ip", ["link", "delete", "dev", this.bridge], { stdio: "ignore", timeout: 5_000 });
    }
    try {
      this.removeCniResults();
    } catch {
      /* best effort */
    }
    this.rmdirCgroups();
  }
}
