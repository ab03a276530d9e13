// Starting the node side's long-lived helpers (the mounts daemon, the FUSE keeper): a node process
// in its own session, so that it outlives whoever started it, its output appended to a log file.
import { spawn } from "node:child_process";
import { closeSync, openSync } from "node:fs";

/** Starts `node ...argv` detached; returns its pid. */
export function spawnDetached(argv: string[], logFile: string, env: Record<string, string> = {}): number | undefined {
  const log = openSync(logFile, "a");
  try {
    const child = spawn(process.execPath, argv, { detached: true, stdio: ["ignore", log, log], env: { ...process.env, ...env } });
    child.unref();
    return child.pid;
  } finally {
    closeSync(log);
  }
}
