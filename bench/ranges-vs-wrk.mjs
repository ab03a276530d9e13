// `skiff bench ranges` against wrk, the C reference load generator, on the same nginx serving one
// random blob over loopback: random single ranges of 4k/64k/1m at concurrency 1/16/64. Both load
// generators are pinned to CPU 0 and nginx (one worker) to CPU 1, and the two alternate round by
// round so that other load on the machine hits both alike; each figure is the median of the rounds.
// Needs wrk, nginx and taskset (Debian packages wrk, nginx, util-linux) and `npm run build`.
//   node bench/ranges-vs-wrk.mjs [--rounds 3] [--seconds 5] [--sizes 4k,64k,1m] [--concurrency 1,16,64]
import { closeSync, mkdirSync, mkdtempSync, openSync, rmSync, writeSync } from "node:fs";
import { randomFillSync } from "node:crypto";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { median } from "./report.mjs";
import { requireTools, runSkiffBench, runWrk, startNginx, writeWrkScript } from "./servers.mjs";

const { values } = parseArgs({
  options: {
    rounds: { type: "string", default: "3" },
    seconds: { type: "string", default: "5" },
    sizes: { type: "string", default: "4k,64k,1m" },
    concurrency: { type: "string", default: "1,16,64" },
  },
});
const ROUNDS = Number(values.rounds);
const SECONDS = Number(values.seconds);
const BLOB_SIZE = 256 * 2 ** 20;
const SIZES = values.sizes.split(",");
const CONCURRENCY = values.concurrency.split(",").map(Number);
const bytes = (s) => Number(s.slice(0, -1)) * { k: 1024, m: 2 ** 20 }[s.at(-1)];
requireTools("wrk", "nginx", "taskset");

const dir = mkdtempSync(join(tmpdir(), "skiff-bench-ranges-"));
mkdirSync(join(dir, "www"));
const fd = openSync(join(dir, "www", "blob"), "w");
const piece = Buffer.alloc(2 ** 20);
for (let i = 0; i < BLOB_SIZE / piece.length; i++) writeSync(fd, randomFillSync(piece));
closeSync(fd);

const script = writeWrkScript(dir);
const nginx = await startNginx(dir, join(dir, "www"));
const url = `${nginx.base}/blob`;
const stop = async () => {
  await nginx.stop();
  rmSync(dir, { recursive: true, force: true });
};
process.once("SIGINT", () => stop().then(() => process.exit(130)));

try {
  const wrk = (size, c) => runWrk(script, url, { size: BLOB_SIZE, length: bytes(size), connections: c, seconds: SECONDS }).rps;
  const skiff = (size, c) => runSkiffBench(url, { sizeFlag: size, connections: c, seconds: SECONDS }).rps;
  console.log(`| range | connections | wrk req/s | skiff bench req/s | ratio |\n| --- | ---: | ---: | ---: | ---: |`);
  for (const size of SIZES) {
    for (const c of CONCURRENCY) {
      const w = [];
      const s = [];
      for (let round = 0; round < ROUNDS; round++) {
        w.push(wrk(size, c));
        s.push(skiff(size, c));
      }
      const mw = median(w);
      const ms = median(s);
      console.log(`| ${size} | ${c} | ${mw.toFixed(0)} | ${ms.toFixed(0)} | ${(ms / mw).toFixed(2)} |`);
    }
  }
} finally {
  await stop();
}
