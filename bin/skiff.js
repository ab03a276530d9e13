#!/usr/bin/env node
// The skiff command. Runs the compiled CLI (npm install builds it; `npm run build` after edits).
import { main } from "../dist/src/cli/main.js";

main(process.argv.slice(2)).then(
  (code) => { process.exitCode = code; },
  (err) => { process.stderr.write(`skiff: ${err?.message ?? err}\n`); process.exitCode = 1; },
);
