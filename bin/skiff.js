#!/usr/bin/env node
// The skiff command. Runs the compiled CLI (npm install builds it; `npm run build` after edits).
// `skiff convert` needs malloc settings glibc reads only when a process starts (bin/skiff, the
// command npm installs, gives them). Started here without them, convert goes through bin/skiff, on
// this Node; Node's own options given to this process do not reach that one.
const MALLOC_SETTINGS = ["MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"];
if (process.argv[2] === "convert" && !MALLOC_SETTINGS.every((name) => name in process.env)) {
  const [{ spawnSync }, { fileURLToPath }] = await Promise.all([import("node:child_process"), import("node:url")]);
  const launcher = fileURLToPath(new URL("skiff", import.meta.url));
  const child = spawnSync("/bin/sh", [launcher, ...process.argv.slice(2)], { stdio: "inherit", env: { ...process.env, SKIFF_NODE: process.execPath } });
  if (child.error) process.stderr.write(`skiff: cannot start ${launcher}: ${child.error.message}\n`);
  if (child.signal) process.kill(process.pid, child.signal);
  process.exit(child.status ?? 1);
}

const { main } = await import("../dist/src/cli/main.js");
// Until main settles: a process whose event loop empties with the command unfinished fails.
process.exitCode = 1;
main(process.argv.slice(2)).then(
  (code) => { process.exitCode = code; },
  (err) => { process.stderr.write(`skiff: ${err?.message ?? err}\n`); process.exitCode = 1; },
);
