// An opt-in trace of where a mount's time goes (`SKIFF_TRACE=FILE`): one JSON object a line, each
// with `t`, milliseconds since the process started (performance.now()), and an `event`: the agent's
// start, the bootstrap's request, response and decoding, the mount, every chunk request (sent,
// first byte, end, with its bytes and the CPU spent inflating and hashing), the cache writes, and
// every read that had to wait for chunks. bench/profile-cold-start.mjs summarises it. Lines are
// buffered and written at most every 100 ms and at exit, so tracing adds no disk write to a read.
// The snapshotter's processes (the snapshotter, its mounts daemon) inherit the variable and share the
// file: each appends a header with its time origin, and every line names its process (`pid`).
import { appendFileSync } from "node:fs";

const file = process.env.SKIFF_TRACE || undefined;
let lines: string[] = [];
let timer: ReturnType<typeof setTimeout> | undefined;

/** Whether `SKIFF_TRACE` is set; callers skip gathering a trace's fields when it isn't. */
export const tracing = file !== undefined;

function flush(): void {
  timer = undefined;
  if (lines.length === 0) return;
  const text = lines.join("\n") + "\n";
  lines = [];
  try {
    appendFileSync(file!, text);
  } catch {
    // A trace is a diagnostic: failing to write it never fails the mount.
  }
}

if (file !== undefined) {
  try {
    appendFileSync(file, JSON.stringify({ t: performance.now(), event: "trace", timeOrigin: performance.timeOrigin, pid: process.pid }) + "\n");
  } catch {
    // as above
  }
  process.on("exit", flush);
}

/** Records one event (nothing unless `SKIFF_TRACE` is set). */
export function trace(event: string, fields?: Record<string, unknown>): void {
  if (file === undefined) return;
  lines.push(JSON.stringify({ t: Math.round(performance.now() * 1000) / 1000, event, pid: process.pid, ...fields }));
  timer ??= setTimeout(flush, 100).unref();
}
