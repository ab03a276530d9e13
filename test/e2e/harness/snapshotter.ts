// `skiff snapshotter` as a test runs it: started on its own root and socket, killed and started again,
// its metrics read, and at the end stopped together with the mounts daemon and FUSE keeper it
// started (found by its root in their command lines), with every mount under its root gone.
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { SKIFF_BIN, parseMetrics, type Sample } from "./skiff.ts";
import { freePort, waitFor } from "./processes.ts";
import { tempDir, unmountAllUnder } from "./workdir.ts";

export class SnapshotterProcess {
  readonly dir: string;
  readonly root: string;
  readonly address: string;
  readonly metricsAddress: string;
  private child: ChildProcess | undefined;
  private output = "";

  private constructor(
    dir: string,
    metricsPort: number,
    private readonly args: string[],
  ) {
    this.dir = dir;
    this.root = join(dir, "root");
    this.address = join(dir, "snapshotter.sock");
    this.metricsAddress = `127.0.0.1:${metricsPort}`;
  }

  /** Starts `skiff snapshotter --proxy PROXY` (or without a proxy) with `args` added. */
  static async start(proxy: string | undefined, args: string[] = []): Promise<SnapshotterProcess> {
    const s = new SnapshotterProcess(tempDir("snapshotter"), await freePort(), [...(proxy ? ["--proxy", proxy] : []), ...args]);
    await s.restart();
    return s;
  }

  get log(): string {
    return this.output;
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  /** Starts it (again), resolving once it listens. */
  async restart(): Promise<void> {
    const child = spawn(process.execPath, [SKIFF_BIN, "snapshotter", "--root", this.root, "--address", this.address, "--metrics", this.metricsAddress, ...this.args], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    this.child = child;
    child.stderr!.on("data", (d: Buffer) => (this.output += d.toString()));
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`the snapshotter did not start: ${this.output}`)), 30_000);
      child.stdout!.on("data", (d: Buffer) => {
        if (d.toString().includes("skiff snapshotter listening on")) {
          clearTimeout(timer);
          resolve();
        }
      });
      child.once("exit", (code) => {
        clearTimeout(timer);
        reject(new Error(`the snapshotter exited (${code}): ${this.output}`));
      });
    });
  }

  /** kill -9 of the gRPC process only, waiting until it is gone. */
  async kill(): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const gone = new Promise((r) => child.once("exit", r));
    child.kill("SIGKILL");
    await gone;
  }

  /** The pid of the mounts daemon this snapshotter started, or 0. */
  daemonPid(): number {
    return this.#pidOf("--mounts-daemon");
  }

  /** The pid of the FUSE keeper the mounts daemon started, or 0. */
  keeperPid(): number {
    return this.#pidOf("--fuse-keeper");
  }

  #pidOf(flag: string): number {
    try {
      return Number(execFileSync("pgrep", ["-f", "--", `--root ${this.root} .*${flag}`], { encoding: "utf8" }).trim().split("\n")[0]);
    } catch {
      return 0; // pgrep found none
    }
  }

  async metrics(): Promise<Sample[]> {
    const res = await fetch(`http://${this.metricsAddress}/metrics`, { signal: AbortSignal.timeout(10_000) });
    return parseMetrics(await res.text());
  }

  /** The sum of a metric over the label sets that have `labels`. */
  async metric(name: string, labels: Record<string, string> = {}): Promise<number> {
    return (await this.metrics()).filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v)).reduce((a, s) => a + s.value, 0);
  }

  /** Whether stop() had to SIGKILL the mounts daemon or the FUSE keeper: they did not end on SIGTERM. */
  stoppedByKill = false;

  /** The lazy layers' FUSE mounts still there once stop() had stopped every process (it then unmounts them). */
  mountsLeftAtStop: string[] = [];

  /** Stops the snapshotter and its mounts daemon and FUSE keeper (SIGTERM, then SIGKILL), and unmounts what is left. */
  async stop(): Promise<void> {
    await this.kill();
    const ours = ["-f", "--", `snapshotter --root ${this.root} `];
    const left = () => {
      try {
        return execFileSync("pgrep", ours, { encoding: "utf8" }).trim() !== "";
      } catch {
        return false;
      }
    };
    if (left()) {
      try {
        execFileSync("pkill", ["-TERM", ...ours]);
      } catch {
        // gone meanwhile
      }
      await waitFor("the mounts daemon to stop", async () => (left() ? undefined : true), { timeoutMs: 15_000, intervalMs: 100 }).catch(() => {
        this.stoppedByKill = true;
        try {
          execFileSync("pkill", ["-KILL", ...ours]);
        } catch {
          // gone meanwhile
        }
      });
    }
    this.mountsLeftAtStop = readFileSync("/proc/self/mountinfo", "utf8")
      .split("\n")
      .map((l) => l.split(" "))
      .filter((f) => f[4]?.startsWith(this.dir) && f.includes("fuse.skiff"))
      .map((f) => f[4]!);
    await unmountAllUnder(this.dir);
  }
}
