// One temporary directory per test process; every harness part makes its own directories inside it.
// It is removed by cleanupWorkdir() (called from the harness teardown) and, as a last resort, on exit.
import { mkdtempSync, mkdirSync, rmSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { spawnSync } from "node:child_process";

let root: string | undefined;
let exitHookInstalled = false;

/** The per-run directory (created on first use) under os.tmpdir(). */
export function runDir(): string {
  if (root === undefined) {
    root = mkdtempSync(join(tmpdir(), "skiff-e2e-"));
    if (!exitHookInstalled) {
      exitHookInstalled = true;
      process.once("exit", () => removeSync());
    }
  }
  return root;
}

/** A fresh directory inside the run directory; `name` only makes it recognisable. */
export function tempDir(name: string): string {
  const safe = name.replace(/[^A-Za-z0-9_.-]/g, "_").slice(0, 40);
  return mkdtempSync(join(runDir(), `${safe}-`));
}

/** A directory with a fixed name inside the run directory (created if missing). */
export function namedDir(name: string): string {
  const dir = join(runDir(), name);
  mkdirSync(dir, { recursive: true });
  return dir;
}

/** Mount points (from /proc/self/mounts) at or below `dir`, deepest first. */
export async function mountsUnder(dir: string): Promise<string[]> {
  let text: string;
  try {
    text = await readFile("/proc/self/mounts", "utf8");
  } catch {
    return [];
  }
  const points = text
    .split("\n")
    .map((line) => line.split(" ")[1])
    .filter((p): p is string => p !== undefined && p !== "")
    // /proc/self/mounts escapes space, tab, newline and backslash as octal.
    .map((p) => p.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8))))
    .filter((p) => p === dir || p.startsWith(dir.endsWith("/") ? dir : `${dir}/`));
  return points.sort((a, b) => b.length - a.length);
}

/** Unmount (lazily) every mount at or below `dir`. Bounded: one attempt per mount point. */
export async function unmountAllUnder(dir: string): Promise<void> {
  for (const point of await mountsUnder(dir)) {
    spawnSync("umount", ["-l", point], { stdio: "ignore", timeout: 10_000 });
  }
}

/** Whether a run directory exists (work not yet cleaned up). */
export function hasRunDir(): boolean {
  return root !== undefined;
}

/** Remove the run directory synchronously (for exit and signal handlers). */
export function removeWorkdirSync(): void {
  removeSync();
}

function removeSync(): void {
  if (root === undefined) return;
  const dir = root;
  root = undefined;
  // Synchronous best effort for process exit: never leave a mount behind before rm -rf.
  try {
    const text = spawnSync("cat", ["/proc/self/mounts"], { encoding: "utf8", timeout: 5_000 }).stdout ?? "";
    const points = text
      .split("\n")
      .map((line) => line.split(" ")[1] ?? "")
      .filter((p) => p.startsWith(`${dir}/`))
      .sort((a, b) => b.length - a.length);
    for (const p of points) spawnSync("umount", ["-l", p], { stdio: "ignore", timeout: 10_000 });
  } catch {
    /* ignore */
  }
  try {
    rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
  } catch {
    /* ignore */
  }
}

/** Remove the run directory (after unmounting anything below it). A later runDir() makes a new one. */
export async function cleanupWorkdir(): Promise<void> {
  if (root === undefined) return;
  await unmountAllUnder(root);
  removeSync();
}
