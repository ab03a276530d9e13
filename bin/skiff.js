#!/usr/bin/env node
// The skiff command. Runs the compiled CLI (npm install builds it; `npm run build` after edits).
import { spawnSync } from "node:child_process";

// `skiff convert` streams a layer through 1 MiB buffers held by short-lived views: with a small
// semi-space (2 MiB) they are freed at the next scavenge instead of piling up until a full
// collection, which keeps its peak memory lower (1 MiB took about 4 % more time, for twice the
// scavenges); with `gc` exposed it collects the ones that outlived a scavenge every 200 ms
// (src/cli/convert.ts), about 25 MiB less; and deflate-raw's encoder threads collect before each
// chunk (src/runtime/node-chunk-encoder.ts) (docs/benchmarks.md, "Converting layers"). V8 sizes its
// heap when the process starts, so convert starts itself again with the flags. The server keeps
// V8's default: there a small semi-space cost about a tenth of its requests/s. The new process also
// gets one malloc arena (glibc; other libcs ignore the variable): otherwise each thread that
// allocates (deflate-raw's encoder threads, the thread pool) keeps an arena of its own, whose freed
// megabytes only that thread reuses: about 10 MiB more at a deflate-raw conversion's peak, and more
// CPU on incompressible layers.
const CONVERT_FLAGS = ["--max-semi-space-size=2", "--expose-gc"];
if (process.argv[2] === "convert" && !process.execArgv.some((arg) => arg.startsWith("--max-semi-space-size"))) {
  const env = { MALLOC_ARENA_MAX: "1", ...process.env };
  const child = spawnSync(process.execPath, [...process.execArgv, ...CONVERT_FLAGS, ...process.argv.slice(1)], { stdio: "inherit", env });
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
