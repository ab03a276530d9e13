// A Worker's outbound fetch in workerd, under `wrangler dev` and under Miniflare's API as the e2e
// harness runs it (test/e2e/harness/worker-runner.mjs): a trivial Worker drains 256 MiB from a
// loopback HTTP server, once. Reports the seconds, the peak number of TCP connections on the machine
// (`ss -tn` lines), and the peak RSS of the Node and workerd processes of the Worker's process group.
// Everything stays on loopback.
//   node bench/worker-outbound.mjs [wrangler] [miniflare]
import { execFileSync, spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { statFields } from "./report.mjs";

const root = resolve(fileURLToPath(new URL("..", import.meta.url)));
const MiB = 1024 * 1024;
const BODY_MIB = 256;
const LIMIT_S = 300;

const worker = `
export default { async fetch(req, env) {
  if (new URL(req.url).pathname === "/ready") return new Response("ok");
  const res = await fetch(env.UPSTREAM + "/body");
  let n = 0;
  for await (const chunk of res.body) n += chunk.byteLength;
  return new Response(String(n));
} };`;

const upstreamScript = `
const chunk = Buffer.alloc(1 << 20, 7);
const srv = require("node:http").createServer((req, res) => {
  res.writeHead(200, { "content-length": String(${BODY_MIB} * chunk.length) });
  let i = 0;
  const pump = () => { while (i < ${BODY_MIB}) { i++; if (!res.write(chunk)) return res.once("drain", pump); } res.end(); };
  pump();
}).listen(0, "127.0.0.1", () => console.log(srv.address().port));`;

const freePort = () => new Promise((ok) => { const s = createServer().listen(0, "127.0.0.1", () => { const p = s.address().port; s.close(() => ok(p)); }); });
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function connections() {
  return execFileSync("ss", ["-tn"], { encoding: "utf8", maxBuffer: 64 * MiB }).split("\n").filter(Boolean).length - 1;
}

/** RSS in bytes of the group's processes, split into workerd and the rest (Node). */
function groupRss(pgid) {
  const sum = { node: 0, workerd: 0 };
  for (const pid of readdirSync("/proc").filter((p) => /^\d+$/.test(p))) {
    try {
      if (Number(statFields(pid)[2]) !== pgid) continue;
      const rss = Number(/^VmRSS:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1] ?? 0) * 1024;
      sum[readFileSync(`/proc/${pid}/comm`, "utf8").trim() === "workerd" ? "workerd" : "node"] += rss;
    } catch {
      // gone meanwhile
    }
  }
  return sum;
}

function start(mode, dir, port, upstream) {
  const env = { ...process.env, WRANGLER_SEND_METRICS: "false", WRANGLER_HIDE_BANNER: "true", CI: "true" };
  const opts = { cwd: dir, detached: true, stdio: "ignore", env };
  if (mode === "wrangler") {
    const args = ["dev", "--ip", "127.0.0.1", "--port", String(port), "--show-interactive-dev-session=false", "--var", `UPSTREAM:${upstream}`];
    return freePort().then((inspector) => spawn(join(root, "node_modules", ".bin", "wrangler"), [...args, "--inspector-port", String(inspector)], opts));
  }
  const spec = { config: join(dir, "wrangler.toml"), script: join(dir, "w.js"), port, persistDir: join(dir, "state"), vars: { UPSTREAM: upstream } };
  return Promise.resolve(spawn(process.execPath, [join(root, "test", "e2e", "harness", "worker-runner.mjs"), JSON.stringify(spec)], opts));
}

async function measure(mode, upstream) {
  // The Worker's files sit in their own directory: wrangler dev watches where its entry is.
  const dir = mkdtempSync(join(tmpdir(), `skiff-bench-outbound-${mode}-`));
  writeFileSync(join(dir, "w.js"), worker);
  writeFileSync(join(dir, "wrangler.toml"), `name = "bench"\nmain = "w.js"\ncompatibility_date = "2026-04-01"\ncompatibility_flags = ["nodejs_compat"]\n`);
  mkdirSync(join(dir, "state"));
  const port = await freePort();
  const child = await start(mode, dir, port, upstream);
  try {
    let ready = false;
    for (let i = 0; i < 120 && !ready; i++) {
      await sleep(500);
      ready = await fetch(`http://127.0.0.1:${port}/ready`).then((r) => r.ok, () => false);
    }
    if (!ready) throw new Error(`${mode}: the Worker did not start`);
    const before = connections();
    const peak = { connections: before, node: 0, workerd: 0 };
    const t0 = Date.now();
    const result = fetch(`http://127.0.0.1:${port}/drain`, { signal: AbortSignal.timeout(LIMIT_S * 1000) })
      .then(async (r) => (r.ok ? `${r.status}, ${await r.text()} bytes drained` : `${r.status} ${(await r.text()).slice(0, 200)}`))
      .catch((e) => `failed: ${e.message}`);
    let outcome;
    for (let i = 0; i < LIMIT_S * 4 + 10 && outcome === undefined; i++) {
      outcome = await Promise.race([result, sleep(250).then(() => undefined)]);
      const rss = groupRss(child.pid);
      peak.connections = Math.max(peak.connections, connections());
      peak.node = Math.max(peak.node, rss.node);
      peak.workerd = Math.max(peak.workerd, rss.workerd);
    }
    const seconds = (Date.now() - t0) / 1000;
    await sleep(2000);
    return { mode, outcome, seconds, before, peak, after: connections() };
  } finally {
    try {
      process.kill(-child.pid, "SIGKILL");
    } catch {
      // gone
    }
    rmSync(dir, { recursive: true, force: true });
  }
}

const modes = process.argv.slice(2).length > 0 ? process.argv.slice(2) : ["wrangler", "miniflare"];
const server = spawn(process.execPath, ["-e", upstreamScript], { stdio: ["ignore", "pipe", "inherit"] });
try {
  const upstreamPort = await new Promise((ok, fail) => { server.stdout.once("data", (d) => ok(Number(String(d).trim()))); server.once("exit", fail); });
  for (const mode of modes) {
    const r = await measure(mode, `http://127.0.0.1:${upstreamPort}`);
    console.log(
      `${r.mode}: ${r.outcome ?? "no answer"} after ${r.seconds.toFixed(1)} s; TCP connections ${r.before} before, peak ${r.peak.connections}, ${r.after} 2 s after; ` +
        `peak RSS Node ${(r.peak.node / MiB).toFixed(0)} MiB, workerd ${(r.peak.workerd / MiB).toFixed(0)} MiB`,
    );
    // Let the other run's leftover sockets close before the next one.
    for (let i = 0; i < 60 && connections() > r.before + 50; i++) await sleep(1000);
  }
} finally {
  server.kill("SIGKILL");
}
