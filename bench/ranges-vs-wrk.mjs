// `skiff bench ranges` against wrk, the C reference load generator, on the same nginx serving one
// random blob over loopback: random single ranges of 4k/64k/1m at concurrency 1/16/64. Both load
// generators are pinned to CPU 0 and nginx (one worker) to CPU 1, and the two alternate round by
// round so that other load on the machine hits both alike; each figure is the median of the rounds.
// Needs wrk, nginx and taskset (Debian packages wrk, nginx, util-linux) and `npm run build`.
//   node bench/ranges-vs-wrk.mjs [--rounds 3] [--seconds 5] [--sizes 4k,64k,1m] [--concurrency 1,16,64]
import { spawn, spawnSync } from "node:child_process";
import { chmodSync, mkdirSync, mkdtempSync, openSync, rmSync, writeFileSync, closeSync, writeSync } from "node:fs";
import { createServer } from "node:net";
import { randomFillSync } from "node:crypto";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const root = resolve(fileURLToPath(new URL("..", import.meta.url)));
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

for (const tool of ["wrk", "nginx", "taskset"]) {
  if (spawnSync("sh", ["-c", `command -v ${tool}`]).status !== 0) throw new Error(`${tool} is missing (apt-get install wrk nginx)`);
}

const dir = mkdtempSync(join(tmpdir(), "skiff-bench-ranges-"));
chmodSync(dir, 0o755); // nginx's worker drops root and must still read the blob
mkdirSync(join(dir, "www"));
mkdirSync(join(dir, "tmp"));
const fd = openSync(join(dir, "www", "blob"), "w");
const piece = Buffer.alloc(2 ** 20);
for (let i = 0; i < BLOB_SIZE / piece.length; i++) writeSync(fd, randomFillSync(piece));
closeSync(fd);

const freePort = () => new Promise((ok) => { const s = createServer().listen(0, "127.0.0.1", () => { const p = s.address().port; s.close(() => ok(p)); }); });
const port = await freePort();
// nginx's own defaults (sendfile off, no tcp_nopush): with tcp_nopush on, loopback responses of
// 64 KiB stalled ~40 ms each on the cork, and wrk measured 400 requests/s instead of 11,000.
writeFileSync(join(dir, "nginx.conf"), `worker_processes 1;
daemon off;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  keepalive_requests 100000000;
  keepalive_timeout 120s;
  client_body_temp_path ${dir}/tmp; proxy_temp_path ${dir}/tmp; fastcgi_temp_path ${dir}/tmp;
  uwsgi_temp_path ${dir}/tmp; scgi_temp_path ${dir}/tmp;
  types { }
  default_type application/octet-stream;
  server { listen 127.0.0.1:${port}; root ${dir}/www; }
}
`);
writeFileSync(join(dir, "range.lua"), `-- A random single range per request, as skiff bench ranges --pattern random does.
local size = tonumber(os.getenv("BLOB_SIZE"))
local len = tonumber(os.getenv("RANGE_LEN"))
math.randomseed(1)
request = function()
  local off = math.random(0, size - len)
  return wrk.format("GET", "/blob", { ["Range"] = "bytes=" .. off .. "-" .. (off + len - 1) })
end
`);
const nginx = spawn("taskset", ["-c", "1", "nginx", "-c", join(dir, "nginx.conf")], { stdio: "inherit" });
const url = `http://127.0.0.1:${port}/blob`;
const stop = () => { nginx.kill(); rmSync(dir, { recursive: true, force: true }); };
process.on("SIGINT", () => { stop(); process.exit(130); });

try {
  for (let i = 0; i < 50; i++) {
    if (spawnSync("curl", ["-sfI", url]).status === 0) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  const wrk = (size, c) => {
    const r = spawnSync("taskset", ["-c", "0", "wrk", "-t1", `-c${c}`, `-d${SECONDS}s`, "-s", join(dir, "range.lua"), url], {
      env: { ...process.env, BLOB_SIZE: String(BLOB_SIZE), RANGE_LEN: String(bytes(size)) },
      encoding: "utf8",
    });
    const rps = /Requests\/sec:\s+([\d.]+)/.exec(r.stdout)?.[1];
    if (!rps || /Non-2xx/.test(r.stdout)) throw new Error(`wrk failed: ${r.stdout}${r.stderr}`);
    return Number(rps);
  };
  const skiff = (size, c) => {
    const r = spawnSync("taskset", ["-c", "0", process.execPath, join(root, "bin", "skiff.js"), "bench", "ranges", url,
      "--duration", `${SECONDS}s`, "--concurrency", String(c), "--size", size, "--json"], { encoding: "utf8" });
    if (r.status !== 0) throw new Error(`skiff bench ranges failed (${r.status}): ${r.stderr}${r.stdout}`);
    return JSON.parse(r.stdout).rps;
  };
  const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
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
  stop();
}
