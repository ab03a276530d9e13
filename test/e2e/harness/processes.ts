// Child processes of the e2e harness: run a command to completion (with a time limit), start a
// long-running service (tracked, so it is killed on teardown or exit), poll until something holds,
// and find a free loopback port.
import { spawn, type ChildProcess, type SpawnOptions } from "node:child_process";
import { createServer } from "node:net";

const tracked = new Set<ChildProcess>();
let exitHookInstalled = false;

/** The environment for children: no proxies (every test talks to loopback only). */
export function childEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (/^(https?|all|no|ftp)_proxy$/i.test(k)) continue;
    env[k] = v;
  }
  env.NO_PROXY = "127.0.0.0/8,localhost";
  env.no_proxy = env.NO_PROXY;
  return { ...env, ...extra };
}

/** Start a long-running child; it is killed by killAllChildren() and on process exit. */
export function spawnService(command: string, args: string[], options: SpawnOptions = {}): ChildProcess {
  const child = spawn(command, args, { env: childEnv(), ...options });
  tracked.add(child);
  child.once("exit", () => tracked.delete(child));
  child.once("error", () => tracked.delete(child));
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.once("exit", killAllChildrenSync);
  }
  return child;
}

/** Whether the child has already exited. */
export function hasExited(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null;
}

/** Send SIGTERM, wait up to `graceMs`, then SIGKILL and wait for the exit. */
export async function stopChild(child: ChildProcess, graceMs = 10_000): Promise<void> {
  if (hasExited(child)) return;
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  child.kill("SIGTERM");
  const timer = new Promise<"timeout">((resolve) => setTimeout(() => resolve("timeout"), graceMs).unref());
  if ((await Promise.race([exited, timer])) === "timeout" && !hasExited(child)) {
    child.kill("SIGKILL");
    await Promise.race([exited, new Promise((r) => setTimeout(r, 5_000).unref())]);
  }
}

/** How many tracked children are still running. */
export function runningChildren(): number {
  return tracked.size;
}

/** SIGKILL every tracked child at once (for exit and signal handlers, which cannot wait). */
export function killAllChildrenSync(): void {
  for (const c of tracked) {
    try {
      c.kill("SIGKILL");
    } catch {
      /* already gone */
    }
  }
}

/** Stop every tracked child (services still running at teardown). */
export async function killAllChildren(): Promise<void> {
  await Promise.all([...tracked].map((c) => stopChild(c, 5_000)));
}

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

export interface RunOptions {
  timeoutMs?: number;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  input?: string;
}

/** Run a command to completion, capturing its output; kill it after `timeoutMs` (default 120 s). */
export function run(command: string, args: string[], options: RunOptions = {}): Promise<RunResult> {
  const timeoutMs = options.timeoutMs ?? 120_000;
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      env: options.env ?? childEnv(),
      cwd: options.cwd,
      stdio: [options.input === undefined ? "ignore" : "pipe", "pipe", "pipe"],
    });
    tracked.add(child);
    let stdout = "";
    let stderr = "";
    let timedOut = false;
    child.stdout?.setEncoding("utf8").on("data", (d: string) => {
      if (stdout.length < 4_000_000) stdout += d;
    });
    child.stderr?.setEncoding("utf8").on("data", (d: string) => {
      if (stderr.length < 4_000_000) stderr += d;
    });
    if (options.input !== undefined) child.stdin?.end(options.input);
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill("SIGKILL");
    }, timeoutMs);
    child.once("error", (err) => {
      clearTimeout(timer);
      tracked.delete(child);
      reject(new Error(`cannot run ${command}: ${err.message}`));
    });
    child.once("close", (code, signal) => {
      clearTimeout(timer);
      tracked.delete(child);
      resolve({ code, signal, stdout, stderr, timedOut });
    });
  });
}

/** Like run(), but throws (with the command's output) unless it exits 0. */
export async function runOk(command: string, args: string[], options: RunOptions = {}): Promise<RunResult> {
  const r = await run(command, args, options);
  if (r.code !== 0) {
    throw new Error(
      `${command} ${args.join(" ")} failed (code ${r.code}, signal ${r.signal}${r.timedOut ? ", timed out" : ""})\n` +
        `stdout: ${r.stdout.slice(-4000)}\nstderr: ${r.stderr.slice(-4000)}`,
    );
  }
  return r;
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Poll `check` every `intervalMs` until it returns a non-undefined value or `timeoutMs` passes. */
export async function waitFor<T>(
  what: string,
  check: () => Promise<T | undefined> | T | undefined,
  { timeoutMs = 20_000, intervalMs = 100 }: { timeoutMs?: number; intervalMs?: number } = {},
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  const maxTries = Math.ceil(timeoutMs / Math.max(1, intervalMs)) + 1;
  for (let i = 0; i < maxTries && Date.now() <= deadline; i++) {
    try {
      const v = await check();
      if (v !== undefined) return v;
    } catch (err) {
      lastError = err;
    }
    await sleep(intervalMs);
  }
  const detail = lastError instanceof Error ? `: ${lastError.message}` : "";
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${detail}`);
}

/** A loopback TCP port that was free a moment ago. */
export function freePort(host = "127.0.0.1"): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, host, () => {
      const addr = srv.address();
      const port = typeof addr === "object" && addr !== null ? addr.port : 0;
      srv.close(() => (port > 0 ? resolve(port) : reject(new Error("no port"))));
    });
  });
}
