// A private containerd (root, state and sockets in a temp dir; the CRI plugin disabled unless asked
// for, see cri.ts) and `ctr` pulls through it, with a hosts directory that sends a registry's pulls
// to a mirror, or lets it be reached over plain http.
import { mkdirSync, openSync, closeSync, readFileSync, writeFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import type { ChildProcess } from "node:child_process";
import { containerdConfig, type CriConfigOptions } from "../../../bench/containerd-config.mjs";
import { tempDir, unmountAllUnder } from "./workdir.ts";
import { hasExited, run, runOk, spawnService, stopChild, waitFor, type RunResult } from "./processes.ts";

export interface PulledImage {
  ref: string;
  type: string;
  digest: string;
}

/**
 * Write `<hostsDir>/<registryHostPort>/hosts.toml` making `mirrorUrl` a pull/resolve mirror of the
 * registry (containerd then asks the mirror first, with `?ns=<registryHostPort>`); an https mirror's
 * certificate is checked against the CA certificate file `ca` when given.
 */
export function writeMirrorHostsToml(hostsDir: string, registryHostPort: string, mirrorUrl: string, ca?: string): string {
  const dir = join(hostsDir, registryHostPort);
  mkdirSync(dir, { recursive: true });
  const path = join(dir, "hosts.toml");
  const mirror = mirrorUrl.replace(/\/+$/, "");
  writeFileSync(
    path,
    [
      `server = "http://${registryHostPort}"`,
      "",
      `[host."${mirror}"]`,
      `  capabilities = ["pull", "resolve"]`,
      ...(ca !== undefined ? [`  ca = ${JSON.stringify(ca)}`] : []),
      "",
    ].join("\n"),
  );
  return path;
}

/**
 * Write `<hostsDir>/<registryHostPort>/hosts.toml` saying the registry speaks plain http (what
 * `ctr --plain-http` says for one pull, for clients such as the CRI plugin that only read hosts.toml).
 */
export function writePlainHttpHostsToml(hostsDir: string, registryHostPort: string): string {
  const dir = join(hostsDir, registryHostPort);
  mkdirSync(dir, { recursive: true });
  const path = join(dir, "hosts.toml");
  // containerd 1.6 rejects a hosts.toml without a [host] table ("invalid `host` tree") and falls
  // back to its defaults; so the server is named again as the one host to pull from.
  writeFileSync(
    path,
    [`server = "http://${registryHostPort}"`, "", `[host."http://${registryHostPort}"]`, `  capabilities = ["pull", "resolve"]`, ""].join("\n"),
  );
  return path;
}

export interface ContainerdOptions {
  /** The directory to run in (created if missing; removed by stop()); default a new temp dir. */
  dir?: string;
  /** Proxy snapshotters: name → socket (`[proxy_plugins.NAME]`). */
  snapshotters?: Record<string, string>;
  /** Enable the CRI plugin with these settings (bench/containerd-config.mjs). */
  cri?: CriConfigOptions;
}

export class Containerd {
  readonly dir: string;
  readonly address: string;
  readonly root: string;
  readonly state: string;
  readonly logPath: string;
  snapshotter = "overlayfs";
  private child: ChildProcess | undefined;

  private constructor(dir: string) {
    this.dir = dir;
    this.root = join(dir, "root");
    this.state = join(dir, "state");
    this.address = join(dir, "containerd.sock");
    this.logPath = join(dir, "containerd.log");
  }

  static async start(options: ContainerdOptions = {}): Promise<Containerd> {
    const dir = options.dir ?? tempDir("containerd");
    mkdirSync(dir, { recursive: true });
    const c = new Containerd(dir);
    try {
      await c.launch(options);
    } catch (err) {
      await c.stop();
      throw err;
    }
    return c;
  }

  private async launch(options: ContainerdOptions): Promise<void> {
    mkdirSync(this.root, { recursive: true });
    mkdirSync(this.state, { recursive: true });
    const cfg = join(this.dir, "config.toml");
    writeFileSync(cfg, containerdConfig({ dir: this.dir, address: this.address, snapshotters: options.snapshotters, cri: options.cri }));
    const log = openSync(this.logPath, "a");
    try {
      this.child = spawnService("containerd", ["--config", cfg], { stdio: ["ignore", log, log] });
    } finally {
      closeSync(log);
    }
    const child = this.child;
    await waitFor(
      "containerd to answer",
      async () => {
        if (hasExited(child)) throw new Error(`containerd exited (${child.exitCode}): ${this.log().slice(-2000)}`);
        const r = await run("ctr", ["--address", this.address, "version"], { timeoutMs: 5_000 });
        return r.code === 0 ? true : undefined;
      },
      { timeoutMs: 30_000, intervalMs: 200 },
    );
    if (options.cri !== undefined) {
      // CRI unpacks into and runs on the snapshotter its config names.
      this.snapshotter = options.cri.snapshotter ?? "overlayfs";
      return;
    }
    // Use overlayfs when containerd could load it here, else the native (copying) snapshotter.
    const plugins = await runOk("ctr", ["--address", this.address, "plugins", "ls"], { timeoutMs: 10_000 });
    const overlay = plugins.stdout.split("\n").find((l) => /io\.containerd\.snapshotter\.v1\s+overlayfs\s/.test(l));
    this.snapshotter = overlay !== undefined && /\sok\s*$/.test(overlay) ? "overlayfs" : "native";
  }

  log(): string {
    try {
      return readFileSync(this.logPath, "utf8");
    } catch {
      return "";
    }
  }

  /** A `ctr` command against this containerd in namespace `ns`. */
  ctr(args: string[], { ns = "skiff-e2e", timeoutMs = 120_000 } = {}): Promise<RunResult> {
    return run("ctr", ["--address", this.address, "--namespace", ns, ...args], { timeoutMs });
  }

  /** `ctr image pull [--plain-http] [--hosts-dir DIR] REF` (unpacks into the snapshotter). */
  pull(
    ref: string,
    o: { hostsDir?: string; plainHttp?: boolean; ns?: string; timeoutMs?: number; allPlatforms?: boolean } = {},
  ): Promise<RunResult> {
    const args = ["image", "pull", "--snapshotter", this.snapshotter];
    if (o.plainHttp !== false) args.push("--plain-http");
    if (o.hostsDir !== undefined) args.push("--hosts-dir", o.hostsDir);
    if (o.allPlatforms === true) args.push("--all-platforms");
    args.push(ref);
    return this.ctr(args, { ns: o.ns, timeoutMs: o.timeoutMs ?? 180_000 });
  }

  /** Images in namespace `ns` (from `ctr image ls`). */
  async images(ns = "skiff-e2e"): Promise<PulledImage[]> {
    const r = await this.ctr(["image", "ls"], { ns, timeoutMs: 30_000 });
    if (r.code !== 0) throw new Error(`ctr image ls failed: ${r.stderr}`);
    return r.stdout
      .split("\n")
      .slice(1)
      .map((l) => l.trim().split(/\s+/))
      .filter((f) => f.length >= 3 && f[0] !== "")
      .map((f) => ({ ref: f[0]!, type: f[1]!, digest: f[2]! }));
  }

  /** Whether the containerd process is still running. */
  get running(): boolean {
    return this.child !== undefined && !hasExited(this.child);
  }

  /** Stop the containerd process only (its directory, mounts and any shims stay). */
  async stopDaemon(): Promise<void> {
    if (this.child !== undefined && !hasExited(this.child)) await stopChild(this.child, 15_000);
    this.child = undefined;
  }

  /** Stop containerd, unmount anything left under its directory, delete it. */
  async stop(): Promise<void> {
    await this.stopDaemon();
    await unmountAllUnder(this.dir);
    try {
      rmSync(this.dir, { recursive: true, force: true, maxRetries: 3 });
    } catch {
      /* best effort; the run directory cleanup tries again */
    }
  }
}
