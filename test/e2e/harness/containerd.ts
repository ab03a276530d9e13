// A private containerd (root, state and sockets in a temp dir, the CRI plugin disabled) and `ctr`
// pulls through it, with a hosts directory that sends a registry's pulls to a mirror.
import { mkdirSync, openSync, closeSync, readFileSync, writeFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import type { ChildProcess } from "node:child_process";
import { containerdConfig } from "../../../bench/containerd-config.mjs";
import { tempDir, unmountAllUnder } from "./workdir.ts";
import { hasExited, run, runOk, spawnService, stopChild, waitFor, type RunResult } from "./processes.ts";

export interface PulledImage {
  ref: string;
  type: string;
  digest: string;
}

/**
 * Write `<hostsDir>/<registryHostPort>/hosts.toml` making `mirrorUrl` a pull/resolve mirror of the
 * registry (containerd then asks the mirror first, with `?ns=<registryHostPort>`).
 */
export function writeMirrorHostsToml(hostsDir: string, registryHostPort: string, mirrorUrl: string): string {
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
      "",
    ].join("\n"),
  );
  return path;
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

  static async start(): Promise<Containerd> {
    const c = new Containerd(tempDir("containerd"));
    await c.launch();
    return c;
  }

  private async launch(): Promise<void> {
    mkdirSync(this.root, { recursive: true });
    mkdirSync(this.state, { recursive: true });
    const cfg = join(this.dir, "config.toml");
    writeFileSync(cfg, containerdConfig({ dir: this.dir, address: this.address }));
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

  /** Stop containerd, unmount anything left under its directory, delete it. */
  async stop(): Promise<void> {
    if (this.child !== undefined && !hasExited(this.child)) await stopChild(this.child, 15_000);
    this.child = undefined;
    await unmountAllUnder(this.dir);
    try {
      rmSync(this.dir, { recursive: true, force: true, maxRetries: 3 });
    } catch {
      /* best effort; the run directory cleanup tries again */
    }
  }
}
