#!/usr/bin/env node
// The skiff command. Runs the compiled CLI (npm install builds it; `npm run build` after edits).
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { setFlagsFromString } from "node:v8";

// `skiff convert` needs settings Node takes only when it starts (bin/skiff, the command npm
// installs, gives them). Started here without them, convert goes through bin/skiff, on this Node;
// Node's own options given to this process do not reach that one.
if (process.argv[2] === "convert" && !process.execArgv.some((arg) => arg.startsWith("--max-semi-space-size"))) {
  const launcher = fileURLToPath(new URL("skiff", import.meta.url));
  const child = spawnSync("/bin/sh", [launcher, ...process.argv.slice(2)], { stdio: "inherit", env: { ...process.env, SKIFF_NODE: process.execPath } });
  if (child.error) process.stderr.write(`skiff: cannot start ${launcher}: ${child.error.message}\n`);
  if (child.signal) process.kill(process.pid, child.signal);
  process.exit(child.status ?? 1);
}

// A conversion is a new process that runs for seconds. With V8's default budget, TurboFan compiled
// about 150 of its functions, 0.6 s of CPU on the core the decoder and the writes need; with a
// budget 4 times larger, 90 functions and 0.3 s, and a layer converted about 4 % sooner
// (docs/benchmarks.md, "Per-entry costs"). Only V8 before 12 (Node before 22) has the flag,
// later ones ignore it. Set here, before any code of the command runs, it works nearly as well as
// given at start (91 compile jobs against 87).
if (process.argv[2] === "convert") setFlagsFromString(`--interrupt-budget=${4 * 66 * 1024}`);

const { main } = await import("../dist/src/cli/main.js");
// Until main settles: a process whose event loop empties with the command unfinished fails.
process.exitCode = 1;
main(process.argv.slice(2)).then(
  (code) => { process.exitCode = code; },
  (err) => { process.stderr.write(`skiff: ${err?.message ?? err}\n`); process.exitCode = 1; },
);
