// The skiff proxy under test, as a child process: `node bin/skiff.js serve …` (needs `npm run build`),
// or on Deno the command of deno.json's `serve` task. Parses the `skiff listening on http(s)://HOST:PORT`
// line (and the `skiff metrics on http://HOST:PORT` line of its own listener for /metrics, on a free
// port unless the test gives --metrics-address), and reads memory use and /metrics.
import { existsSync, openSync, closeSync, readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import type { ChildProcess } from "node:child_process";
import type { TlsFiles } from "./registry.ts";
import { tempDir } from "./workdir.ts";
import { childEnv, hasExited, spawnService, stopChild } from "./processes.ts";

export const REPO_ROOT = resolve(fileURLToPath(new URL(".", import.meta.url)), "..", "..", "..");
/** The CLI entry to run; SKIFF_E2E_BIN points the suites at another build of the same CLI. */
export const SKIFF_BIN = process.env.SKIFF_E2E_BIN ?? join(REPO_ROOT, "bin", "skiff.js");
/** The Deno binary the npm devDependency installs. */
export const DENO_BIN = join(REPO_ROOT, "node_modules", ".bin", "deno");

export type SkiffRuntime = "node" | "deno";

/** The runtime a Skiff starts on when its options name none: $SKIFF_E2E_RUNTIME, else node. */
export function defaultRuntime(): SkiffRuntime {
  const r = process.env.SKIFF_E2E_RUNTIME ?? "node";
  if (r !== "node" && r !== "deno") throw new Error(`SKIFF_E2E_RUNTIME must be node or deno, got ${JSON.stringify(r)}`);
  return r;
}

/**
 * deno.json's `serve` task as argv, run directly rather than through `deno task` (which would put
 * a task runner between us and the server): the tests use the task's permissions, and the child's
 * PID is the server's, whose memory vmHWMBytes() reads.
 */
export function denoServeCommand(): string[] {
  const task = (JSON.parse(readFileSync(join(REPO_ROOT, "deno.json"), "utf8")) as { tasks?: Record<string, string> }).tasks?.serve;
  const words = task?.trim().split(/\s+/) ?? [];
  if (!words[0]?.endsWith("deno") || words[1] !== "run" || words.at(-1) !== "serve") {
    throw new Error(`deno.json's serve task is not "…deno run … serve": ${JSON.stringify(task)}`);
  }
  return [DENO_BIN, ...words.slice(1)];
}

export interface SkiffOptions {
  /** `--upstream URL`; left out when not given (e.g. with `config`). */
  upstream?: string;
  /** A config document (docs/configuration.md), written to `config.json` in skiff's temp dir and passed as `--config`. */
  config?: object;
  /** Store directory; a fresh temp dir by default. */
  dataDir?: string;
  tagTtl?: number;
  upstreamUser?: string;
  upstreamPassword?: string;
  allowHosts?: string[];
  registryAliases?: string[];
  extraArgs?: string[];
  env?: Record<string, string>;
  startTimeoutMs?: number;
  /** Runtime of the server (default: defaultRuntime()). */
  runtime?: SkiffRuntime;
  /** Serve https with these files (`--tls-cert`, `--tls-key`); /metrics stays plain http on its own listener. */
  tls?: TlsFiles;
}

const LISTENING = /^skiff listening on (https?:\/\/\S+?)\/?$/;
const METRICS = /^skiff metrics on (http:\/\/\S+?)\/?$/;

export class Skiff {
  readonly dataDir: string;
  readonly logPath: string;
  readonly url: string;
  /** The listener for /metrics; undefined with --metrics-address off. */
  readonly metricsUrl: string | undefined;
  readonly runtime: SkiffRuntime;
  private readonly child: ChildProcess;

  private constructor(child: ChildProcess, url: string, metricsUrl: string | undefined, dataDir: string, logPath: string, runtime: SkiffRuntime) {
    this.child = child;
    this.url = url;
    this.metricsUrl = metricsUrl;
    this.dataDir = dataDir;
    this.logPath = logPath;
    this.runtime = runtime;
  }

  static async start(o: SkiffOptions): Promise<Skiff> {
    const runtime = o.runtime ?? defaultRuntime();
    if (runtime === "node" && process.env.SKIFF_E2E_BIN === undefined && !existsSync(join(REPO_ROOT, "dist", "src", "cli", "main.js"))) {
      throw new Error("skiff is not built: run `npm run build` (test/run.sh does)");
    }
    if (runtime === "deno" && !existsSync(DENO_BIN)) throw new Error(`no Deno at ${DENO_BIN}: run \`npm install\` (deno is a devDependency)`);
    const dir = tempDir("skiff");
    const dataDir = o.dataDir ?? join(dir, "data");
    const logPath = join(dir, "skiff.log");
    const [command, ...serve] = runtime === "deno" ? denoServeCommand() : [process.execPath, SKIFF_BIN, "serve"];
    const args = [...serve, "--host", "127.0.0.1", "--port", "0", "--data", dataDir];
    if (o.upstream !== undefined) args.push("--upstream", o.upstream);
    if (o.config !== undefined) {
      const configPath = join(dir, "config.json");
      writeFileSync(configPath, JSON.stringify(o.config, null, 2));
      args.push("--config", configPath);
    }
    if (o.tagTtl !== undefined) args.push("--tag-ttl", String(o.tagTtl));
    if (o.upstreamUser !== undefined) args.push("--upstream-user", o.upstreamUser);
    if (o.upstreamPassword !== undefined) args.push("--upstream-password", o.upstreamPassword);
    for (const h of o.allowHosts ?? []) args.push("--allow-host", h);
    for (const a of o.registryAliases ?? []) args.push("--registry-alias", a);
    if (o.tls !== undefined) args.push("--tls-cert", o.tls.certificate, "--tls-key", o.tls.key);
    args.push(...(o.extraArgs ?? []));
    // Suites run in parallel: the default 127.0.0.1:9107 would be taken by the first.
    const metricsFlag = o.extraArgs?.indexOf("--metrics-address") ?? -1;
    const metricsOff = metricsFlag >= 0 && o.extraArgs![metricsFlag + 1] === "off";
    if (metricsFlag < 0) args.push("--metrics-address", "127.0.0.1:0");

    const err = openSync(logPath, "a");
    let child: ChildProcess;
    try {
      child = spawnService(command!, args, {
        cwd: REPO_ROOT,
        stdio: ["ignore", "pipe", err],
        // Deno: no update check (nothing but loopback), no colour codes in the log.
        env: childEnv({ ...(runtime === "deno" ? { DENO_NO_UPDATE_CHECKS: "1", NO_COLOR: "1" } : {}), ...o.env }),
      });
    } finally {
      closeSync(err);
    }
    const log = () => {
      try {
        return readFileSync(logPath, "utf8").slice(-3000);
      } catch {
        return "";
      }
    };
    const urls = await new Promise<{ url: string; metricsUrl?: string }>((resolveUrl, reject) => {
      let buf = "";
      const timer = setTimeout(() => {
        reject(new Error(`skiff printed no listening line within ${o.startTimeoutMs ?? 20_000} ms; stdout: ${buf}\nstderr: ${log()}`));
      }, o.startTimeoutMs ?? 20_000);
      const onData = (d: string) => {
        buf += d;
        const lines = buf.split("\n").map((line) => line.trim());
        const url = lines.map((line) => LISTENING.exec(line)?.[1]).find(Boolean);
        const metricsUrl = lines.map((line) => METRICS.exec(line)?.[1]).find(Boolean);
        if (url && (metricsUrl || metricsOff)) {
          clearTimeout(timer);
          child.stdout?.off("data", onData);
          child.stdout?.resume(); // keep draining later output
          resolveUrl({ url, metricsUrl });
          return;
        }
        if (buf.length > 100_000) buf = buf.slice(-10_000);
      };
      child.stdout?.setEncoding("utf8").on("data", onData);
      child.once("exit", (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`skiff exited (code ${code}, signal ${signal}) before listening; stdout: ${buf}\nstderr: ${log()}`));
      });
      child.once("error", (e) => {
        clearTimeout(timer);
        reject(e);
      });
    }).catch(async (e: unknown) => {
      await stopChild(child, 2_000);
      throw e;
    });
    return new Skiff(child, urls.url, urls.metricsUrl, dataDir, logPath, runtime);
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  get hostPort(): string {
    return new URL(this.url).host;
  }

  get running(): boolean {
    return !hasExited(this.child);
  }

  /** Exit status once it has exited by itself (null while running, or when a signal killed it). */
  get exitCode(): number | null {
    return this.child.exitCode;
  }

  /** skiff's stderr so far. */
  log(): string {
    try {
      return readFileSync(this.logPath, "utf8");
    } catch {
      return "";
    }
  }

  async stop(): Promise<void> {
    await stopChild(this.child);
  }

  /** Sends `signal` and leaves the process to stop by itself (see exited()). */
  signal(signal: NodeJS.Signals): void {
    this.child.kill(signal);
  }

  /** How the process ended, once it has; rejects after `timeoutMs`. */
  exited(timeoutMs = 60_000): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    if (hasExited(this.child)) return Promise.resolve({ code: this.child.exitCode, signal: this.child.signalCode });
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`skiff did not exit within ${timeoutMs} ms`)), timeoutMs);
      this.child.once("exit", (code, signal) => {
        clearTimeout(timer);
        resolve({ code, signal });
      });
    });
  }

  /** Peak resident set size (VmHWM from /proc/PID/status), in bytes. */
  vmHWMBytes(): number {
    return procStatusKb(this.pid, "VmHWM") * 1024;
  }

  /** Current resident set size (VmRSS), in bytes. */
  vmRSSBytes(): number {
    return procStatusKb(this.pid, "VmRSS") * 1024;
  }

  /** GET /metrics from the metrics listener (raw text). */
  async metricsText(): Promise<string> {
    if (!this.metricsUrl) throw new Error("skiff was started with --metrics-address off");
    const res = await fetch(`${this.metricsUrl}/metrics`, { signal: AbortSignal.timeout(10_000) });
    const text = await res.text();
    if (res.status !== 200) throw new Error(`GET /metrics: ${res.status} ${text.slice(0, 500)}`);
    return text;
  }

  /** GET /metrics, each metric name → its value summed over all label sets. */
  async metrics(): Promise<Map<string, number>> {
    return sumMetrics(parseMetrics(await this.metricsText()));
  }

  /** One metric, summed over label sets (0 when absent). */
  async metric(name: string): Promise<number> {
    return (await this.metrics()).get(name) ?? 0;
  }
}

export function procStatusKb(pid: number, field: string): number {
  const text = readFileSync(`/proc/${pid}/status`, "utf8");
  const m = new RegExp(`^${field}:\\s+(\\d+)\\s+kB`, "m").exec(text);
  if (m === null) throw new Error(`no ${field} in /proc/${pid}/status`);
  return Number(m[1]);
}

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Parse Prometheus text exposition format (comments skipped; timestamps ignored). */
export function parseMetrics(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) continue;
    const m = /^([A-Za-z_:][A-Za-z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+\S+)?$/.exec(line);
    if (m === null) continue;
    const labels: Record<string, string> = {};
    const body = m[3] ?? "";
    const re = /([A-Za-z_][A-Za-z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"/g;
    for (let lm = re.exec(body); lm !== null; lm = re.exec(body)) {
      labels[lm[1]!] = lm[2]!.replace(/\\n/g, "\n").replace(/\\"/g, '"').replace(/\\\\/g, "\\");
    }
    const v = m[4]!;
    const value = v === "+Inf" ? Infinity : v === "-Inf" ? -Infinity : Number(v);
    samples.push({ name: m[1]!, labels, value });
  }
  return samples;
}

export function sumMetrics(samples: Sample[]): Map<string, number> {
  const out = new Map<string, number>();
  for (const s of samples) out.set(s.name, (out.get(s.name) ?? 0) + s.value);
  return out;
}
