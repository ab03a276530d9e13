// skiff's Worker entry in workerd with a local R2 bucket persisted in a temp dir. wrangler bundles it
// as for a deployment (`wrangler deploy --dry-run`), and worker-runner.mjs runs the bundle through
// Miniflare in a child Node process with wrangler.toml's compatibility settings and bindings, the
// upstream given as a var. Not `wrangler dev`: its inspector proxy sends wrangler's Node process one
// loopback request per chunk the Worker fetches, which made large pulls crawl and fail.
import { closeSync, existsSync, openSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createRequire } from "node:module";
import type { ChildProcess } from "node:child_process";
import { REPO_ROOT } from "./skiff.ts";
import { tempDir } from "./workdir.ts";
import { childEnv, freePort, hasExited, runOk, spawnService, waitFor } from "./processes.ts";

export interface WorkerOptions {
  upstream?: string;
  /** Extra vars (`NAME: value`), e.g. SKIFF_CONFIG or CONVERT_WAIT. */
  vars?: Record<string, string>;
  /** Where the local R2 bucket lives; a fresh temp dir by default. */
  persistDir?: string;
  /** Open workerd's V8 inspector, for heapSampler(). */
  inspect?: boolean;
  /**
   * The V8 heap limit workerd gives every isolate, in MB (`--max-old-space-size`), as the platform
   * limits a Worker's memory; workerd run locally has none. Over it, workerd ends with a fatal error.
   */
  heapLimitMb?: number;
  /** A module to run instead of skiff's bundle, with the same config (for tests of this harness). */
  script?: string;
}

/** What heapSampler uses of a `ws` WebSocket. */
interface InspectorSocket {
  once(event: "open" | "error", listener: (err?: unknown) => void): void;
  on(event: "message", listener: (data: unknown) => void): void;
  send(text: string): void;
  close(): void;
}

/**
 * The largest V8 heap (objects and array buffers) a sampler saw, garbage not yet collected included.
 * (Collecting through the inspector, HeapProfiler.collectGarbage, slowed a conversion twentyfold.)
 */
export interface HeapPeak {
  /** Heap in use plus ArrayBuffer backing stores (usedSize + backingStorageSize). */
  withGarbage: number;
  samples: number;
}

const WRANGLER = join(REPO_ROOT, "node_modules", ".bin", "wrangler");
const CONFIG = join(REPO_ROOT, "wrangler.toml");
const RUNNER = join(REPO_ROOT, "test", "e2e", "harness", "worker-runner.mjs");
// Offline and quiet: no metrics, and no banner (whose update check would reach the npm registry).
const WRANGLER_ENV = { WRANGLER_SEND_METRICS: "false", WRANGLER_HIDE_BANNER: "true", CI: "true" };

let bundled: string | undefined;

/** The secret the Workers started here are given, so that they serve /metrics (src/runtime/worker.ts). */
export const METRICS_TOKEN = "e2e-metrics-token";

/** The Worker bundled from wrangler.toml's main, once while the run directory holds it. */
async function bundle(): Promise<string> {
  if (bundled && existsSync(bundled)) return bundled;
  const outDir = tempDir("worker-bundle");
  await runOk(WRANGLER, ["deploy", "--dry-run", "--config", CONFIG, "--outdir", outDir], { cwd: outDir, env: childEnv(WRANGLER_ENV), timeoutMs: 120_000 });
  const scripts = readdirSync(outDir).filter((f) => f.endsWith(".js"));
  if (scripts.length !== 1) throw new Error(`expected one bundled script from wrangler, found: ${scripts.join(", ") || "none"}`);
  bundled = join(outDir, scripts[0]!);
  return bundled;
}

export class WorkerSkiff {
  readonly url: string;
  readonly persistDir: string;
  readonly logPath: string;
  private readonly child: ChildProcess;

  private constructor(child: ChildProcess, url: string, persistDir: string, logPath: string) {
    this.child = child;
    this.url = url;
    this.persistDir = persistDir;
    this.logPath = logPath;
  }

  static async start(o: WorkerOptions = {}): Promise<WorkerSkiff> {
    const script = o.script ?? (await bundle());
    const dir = tempDir("worker");
    const persistDir = o.persistDir ?? join(dir, "state");
    const logPath = join(dir, "worker.log");
    const port = await freePort();
    // Strings, as `wrangler dev --var NAME:value` gives them; they replace wrangler.toml's [vars].
    // METRICS_TOKEN: the Worker serves /metrics only to requests that bear it (metricsText()).
    const vars = { METRICS_TOKEN, ...(o.upstream ? { UPSTREAM: o.upstream } : {}), ...o.vars };
    const inspectorPort = o.inspect ? await freePort() : undefined;
    const v8Flags = o.heapLimitMb ? [`--max-old-space-size=${o.heapLimitMb}`] : undefined;
    const spec = { config: CONFIG, script, port, persistDir, vars, inspectorPort, v8Flags };
    const out = openSync(logPath, "a");
    let child: ChildProcess;
    try {
      // Its own process group, so stopping it also stops the workerd it runs.
      child = spawnService(process.execPath, [RUNNER, JSON.stringify(spec)], { cwd: dir, stdio: ["ignore", out, out], detached: true, env: childEnv(WRANGLER_ENV) });
    } finally {
      closeSync(out);
    }
    // If the test process dies without stop(), the runner's whole group (workerd too) goes with it.
    const killGroup = () => {
      try {
        process.kill(-child.pid!, "SIGKILL");
      } catch {
        /* gone */
      }
    };
    process.once("exit", killGroup);
    child.once("exit", () => process.off("exit", killGroup));
    const url = `http://127.0.0.1:${port}`;
    const w = new WorkerSkiff(child, url, persistDir, logPath);
    w.inspectorPort = inspectorPort;
    try {
      await waitFor(
        `the Worker on ${url}`,
        async () => {
          if (hasExited(child)) throw new Error(`the Worker's runner exited (${child.exitCode}): ${w.log().slice(-3000)}`);
          const res = await fetch(`${url}/v2/`, { signal: AbortSignal.timeout(2_000) }).catch(() => null);
          await res?.arrayBuffer();
          return res && res.status < 500 ? true : undefined;
        },
        { timeoutMs: 60_000, intervalMs: 250 },
      );
    } catch (err) {
      await w.stop();
      throw err;
    }
    return w;
  }

  private inspectorPort: number | undefined;

  /**
   * Samples the skiff Worker's V8 heap every `intervalMs` through workerd's inspector
   * (Runtime.getHeapUsage) until stop(): the peak of heap plus array buffers, garbage included, an
   * upper bound of what the isolate needed. Samples are taken between the Worker's tasks. Needs
   * `inspect: true`.
   */
  async heapSampler(intervalMs = 100): Promise<{ stop(): Promise<HeapPeak> }> {
    if (!this.inspectorPort) throw new Error("start the Worker with inspect: true");
    const targets = (await (await fetch(`http://127.0.0.1:${this.inspectorPort}/json`)).json()) as { title?: string; webSocketDebuggerUrl?: string }[];
    const target = targets.find((t) => t.title?.includes("skiff") && t.webSocketDebuggerUrl) ?? targets.find((t) => t.webSocketDebuggerUrl && !t.title?.includes("local-r2-tools"));
    if (!target?.webSocketDebuggerUrl) throw new Error(`no inspector target for the Worker: ${JSON.stringify(targets)}`);
    // ws comes with Miniflare (which speaks to workerd's inspector with it); Node 20 has no WebSocket.
    const WebSocket = createRequire(createRequire(import.meta.url).resolve("miniflare"))("ws") as new (url: string) => InspectorSocket;
    const socket = new WebSocket(target.webSocketDebuggerUrl);
    await new Promise<void>((resolve, reject) => {
      socket.once("open", () => resolve());
      socket.once("error", reject);
    });
    let id = 0;
    const waiting = new Map<number, (result: Record<string, number>) => void>();
    socket.on("message", (data: unknown) => {
      const m = JSON.parse(String(data)) as { id?: number; result?: Record<string, number> };
      if (m.id !== undefined) waiting.get(m.id)?.(m.result ?? {});
      if (m.id !== undefined) waiting.delete(m.id);
    });
    const call = (method: string) =>
      new Promise<Record<string, number>>((resolve) => {
        waiting.set(++id, resolve);
        socket.send(JSON.stringify({ id, method }));
      });
    const peak: HeapPeak = { withGarbage: 0, samples: 0 };
    let running = true;
    const loop = (async () => {
      while (running) {
        const u = await call("Runtime.getHeapUsage");
        peak.withGarbage = Math.max(peak.withGarbage, (u.usedSize ?? 0) + (u.backingStorageSize ?? 0));
        peak.samples++;
        await new Promise((r) => setTimeout(r, intervalMs));
      }
    })();
    return {
      async stop() {
        running = false;
        await loop;
        socket.close();
        return peak;
      },
    };
  }

  get hostPort(): string {
    return new URL(this.url).host;
  }

  log(): string {
    try {
      return readFileSync(this.logPath, "utf8");
    } catch {
      return "";
    }
  }

  /**
   * Rewrites local R2's object `key` as a single part (worker-runner.mjs says why): read from the
   * bucket then streams with backpressure, as from R2 itself. A 1 GiB object took about 45 s alone
   * and once more than 300 s in the whole suite.
   */
  async storeAsSinglePart(key: string, timeoutMs = 600_000): Promise<void> {
    const res = await fetch(`${this.url}/single-part?key=${encodeURIComponent(key)}`, {
      method: "POST",
      headers: { "MF-Route-Override": "local-r2-tools" },
      signal: AbortSignal.timeout(timeoutMs),
    });
    const text = await res.text();
    if (!res.ok) throw new Error(`rewriting ${key} as one part: HTTP ${res.status}: ${text.slice(0, 500)}`);
  }

  /** The keys in local R2 under `prefix`, all of them. */
  async bucketKeys(prefix = ""): Promise<string[]> {
    return (await this.#tools(`/list?prefix=${encodeURIComponent(prefix)}`, { method: "GET" })).json() as Promise<string[]>;
  }

  /** Writes `bytes` to local R2 at `key`, behind skiff's back. */
  async putObject(key: string, bytes: Uint8Array<ArrayBuffer>): Promise<void> {
    await this.#tools(`/object?key=${encodeURIComponent(key)}`, { method: "PUT", body: bytes });
  }

  /** Runs the Worker's scheduled handler as its cron trigger would, and waits for it to end. */
  async runScheduled(): Promise<void> {
    const res = await fetch(`${this.url}/cdn-cgi/handler/scheduled?cron=${encodeURIComponent("17 * * * *")}`, { signal: AbortSignal.timeout(120_000) });
    const text = await res.text();
    if (!res.ok) throw new Error(`scheduled handler: HTTP ${res.status}: ${text.slice(0, 500)}`);
  }

  async #tools(path: string, init: RequestInit): Promise<Response> {
    const res = await fetch(`${this.url}${path}`, { ...init, headers: { "MF-Route-Override": "local-r2-tools" }, signal: AbortSignal.timeout(60_000) });
    if (!res.ok) throw new Error(`local R2 tools ${path}: HTTP ${res.status}: ${(await res.text()).slice(0, 500)}`);
    return res;
  }

  /** Peak resident set size of the workerd process serving the Worker (VmHWM), in bytes. */
  workerdVmHWMBytes(): number {
    return this.workerdStatusBytes("VmHWM");
  }

  /** Resident set size of the workerd process now (VmRSS), in bytes. */
  workerdVmRSSBytes(): number {
    return this.workerdStatusBytes("VmRSS");
  }

  /** Starts workerd's VmHWM over from its current resident set size (Linux: clear_refs 5). */
  resetWorkerdVmHWM(): void {
    writeFileSync(`/proc/${this.workerdPid()}/clear_refs`, "5");
  }

  private workerdStatusBytes(field: "VmHWM" | "VmRSS"): number {
    const m = new RegExp(`^${field}:\\s+(\\d+)\\s+kB`, "m").exec(readFileSync(`/proc/${this.workerdPid()}/status`, "utf8"));
    if (!m) throw new Error(`no ${field} in workerd's /proc status`);
    return Number(m[1]) * 1024;
  }

  /** The workerd process in the runner's process group. */
  private workerdPid(): string {
    const group = this.child.pid!;
    for (const pid of readdirSync("/proc").filter((p) => /^\d+$/.test(p))) {
      try {
        const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
        // Fields after the command name: state, ppid, pgrp.
        const pgrp = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[2]);
        if (pgrp === group && readFileSync(`/proc/${pid}/cmdline`, "utf8").includes("workerd")) return pid;
      } catch {
        // the process went away meanwhile
      }
    }
    throw new Error("no workerd process found in the runner's process group");
  }

  /** GET /metrics with the harness's METRICS_TOKEN. */
  async metricsText(): Promise<string> {
    const res = await fetch(`${this.url}/metrics`, { headers: { Authorization: `Bearer ${METRICS_TOKEN}` }, signal: AbortSignal.timeout(10_000) });
    const text = await res.text();
    if (res.status !== 200) throw new Error(`GET /metrics: ${res.status} ${text.slice(0, 500)}`);
    return text;
  }

  async stop(): Promise<void> {
    if (hasExited(this.child)) return;
    const exited = new Promise<void>((resolve) => this.child.once("exit", () => resolve()));
    const group = -this.child.pid!;
    try {
      process.kill(group, "SIGTERM");
    } catch {
      return;
    }
    const timeout = new Promise<"timeout">((resolve) => setTimeout(resolve, 10_000, "timeout").unref());
    if ((await Promise.race([exited, timeout])) === "timeout") {
      try {
        process.kill(group, "SIGKILL");
      } catch {
        /* gone */
      }
      await exited;
    }
  }
}
