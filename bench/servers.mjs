// Servers and load generators the serving benchmarks share: nginx serving a directory, a
// Distribution registry, skiff on Node, Deno and workerd, wrk with a random-Range script, and
// `skiff bench ranges`. Servers are pinned to one CPU and load generators to another (taskset), so
// neither steals the other's core. Everything listens on 127.0.0.1 and lives in a temp dir.
import { spawn, spawnSync } from "node:child_process";
import { chmodSync, mkdirSync, readdirSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const root = resolve(fileURLToPath(new URL("..", import.meta.url)));
export const SERVER_CPU = "1";
export const CLIENT_CPU = "0";

export function requireTools(...tools) {
  for (const tool of tools) {
    if (spawnSync("sh", ["-c", `command -v ${tool}`]).status !== 0) throw new Error(`${tool} is missing (Debian: apt-get install wrk nginx docker-registry)`);
  }
}

export const freePort = () =>
  new Promise((ok) => {
    const s = createServer().listen(0, "127.0.0.1", () => {
      const p = s.address().port;
      s.close(() => ok(p));
    });
  });

/** Waits (at most `ms`) until the URL answers below 500. */
export async function waitUrl(url, child, ms = 60_000) {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (child.exitCode !== null) throw new Error(`${url}: the server exited (${child.exitCode})`);
    const res = await fetch(url, { signal: AbortSignal.timeout(2_000) }).catch(() => null);
    await res?.arrayBuffer();
    if (res && res.status < 500) return;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`${url} did not answer within ${ms} ms`);
}

/** A server process pinned to the server CPU, in its own process group. */
function pinned(command, args, options = {}) {
  const child = spawn("taskset", ["-c", SERVER_CPU, command, ...args], { stdio: ["ignore", "ignore", "inherit"], detached: true, ...options });
  return {
    child,
    stop: () =>
      new Promise((done) => {
        if (child.exitCode !== null) return done();
        child.once("exit", () => done());
        try {
          process.kill(-child.pid, "SIGTERM");
        } catch {
          done();
        }
      }),
  };
}

/**
 * nginx (one worker) serving `www`. Its own defaults otherwise (sendfile off, no tcp_nopush): with
 * tcp_nopush on, 64 KiB responses on loopback stalled ~40 ms each on the cork.
 */
export async function startNginx(dir, www) {
  const port = await freePort();
  mkdirSync(join(dir, "nginx-tmp"), { recursive: true });
  chmodSync(dir, 0o755); // nginx's worker drops root and must still read the files
  const t = join(dir, "nginx-tmp");
  writeFileSync(
    join(dir, "nginx.conf"),
    `worker_processes 1;
daemon off;
pid ${dir}/nginx.pid;
error_log ${dir}/nginx-error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  keepalive_requests 100000000;
  keepalive_timeout 120s;
  client_body_temp_path ${t}; proxy_temp_path ${t}; fastcgi_temp_path ${t}; uwsgi_temp_path ${t}; scgi_temp_path ${t};
  types { }
  default_type application/octet-stream;
  server { listen 127.0.0.1:${port}; root ${www}; }
}
`,
  );
  const server = pinned("nginx", ["-c", join(dir, "nginx.conf")]);
  const base = `http://127.0.0.1:${port}`;
  await waitUrl(`${base}/`, server.child);
  return { ...server, base };
}

/** A bare node:http server answering ranges of `file` (bench/node-ceiling.mjs): Node's own ceiling. */
export async function startNodeCeiling(file) {
  const port = await freePort();
  const server = pinned(process.execPath, [join(root, "bench", "node-ceiling.mjs"), file, String(port)]);
  const base = `http://127.0.0.1:${port}`;
  await waitUrl(base, server.child);
  return { ...server, base };
}

/**
 * A Distribution registry with filesystem storage and no access log (it would cost it time).
 * `quiet` drops its stderr too: it logs every 404, and skopeo's pushes ask for absent blobs first.
 */
export async function startRegistry(dir, { quiet = false } = {}) {
  const port = await freePort();
  const config = join(dir, "registry.yml");
  writeFileSync(
    config,
    `version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: ${join(dir, "registry")}
http:
  addr: 127.0.0.1:${port}
  secret: skiff-bench
`,
  );
  const server = pinned("docker-registry", ["serve", config], quiet ? { stdio: "ignore" } : {});
  const base = `http://127.0.0.1:${port}`;
  await waitUrl(`${base}/v2/`, server.child);
  return { ...server, base };
}

/** Pushes one blob into a repository (monolithic upload); returns its blob URL. */
export async function pushBlob(registryBase, name, bytes, digest) {
  const started = await fetch(`${registryBase}/v2/${name}/blobs/uploads/`, { method: "POST" });
  if (started.status !== 202) throw new Error(`upload start: ${started.status}`);
  const location = new URL(started.headers.get("location"), registryBase);
  location.searchParams.set("digest", digest);
  const put = await fetch(location, { method: "PUT", body: bytes, headers: { "Content-Type": "application/octet-stream" } });
  if (put.status !== 201) throw new Error(`upload: ${put.status} ${await put.text()}`);
  return `${registryBase}/v2/${name}/blobs/${digest}`;
}

/** The environment of `skiff serve` as bin/skiff and the container image start it: one malloc arena. */
export function serveEnv() {
  return { ...process.env, MALLOC_ARENA_MAX: process.env.MALLOC_ARENA_MAX ?? "1" };
}

/**
 * skiff in front of `upstream` on one runtime: "node", "deno" or "workerd". `name` tells apart the
 * store directories of several on one runtime; `args` are more `skiff serve` flags (Node and Deno).
 * `bin` is bin/skiff.js of the build to run on Node (this tree's by default).
 * `metricsBase` is where /metrics is served (node and deno: a listener of its own; none on workerd).
 */
export async function startSkiff(runtime, dir, upstream, { name = runtime, args = [], bin = join(root, "bin", "skiff.js") } = {}) {
  const port = await freePort();
  const metricsPort = await freePort();
  const data = join(dir, `skiff-${name}`);
  mkdirSync(data, { recursive: true });
  const serveArgs = ["--upstream", upstream, "--upstream-public", "--host", "127.0.0.1", "--port", String(port), "--data", data, "--metrics-address", `127.0.0.1:${metricsPort}`, ...args];
  let server;
  if (runtime === "node") {
    server = pinned(process.execPath, [bin, "serve", ...serveArgs], { env: serveEnv() });
  } else if (runtime === "deno") {
    server = pinned(join(root, "node_modules", ".bin", "deno"), ["task", "serve", ...serveArgs], { cwd: root });
  } else {
    // The deployment bundle in Miniflare (test/e2e/harness/worker-runner.mjs), local R2 in `data`.
    const out = join(dir, "worker-bundle");
    const env = { ...process.env, WRANGLER_SEND_METRICS: "false", WRANGLER_HIDE_BANNER: "true", CI: "true" };
    const built = spawnSync(join(root, "node_modules", ".bin", "wrangler"), ["deploy", "--dry-run", "--config", join(root, "wrangler.toml"), "--outdir", out], { cwd: dir, env, encoding: "utf8" });
    if (built.status !== 0) throw new Error(`wrangler bundle: ${built.stderr}`);
    const script = join(out, readdirSync(out).find((f) => f.endsWith(".js")));
    const spec = { config: join(root, "wrangler.toml"), script, port, persistDir: data, vars: { UPSTREAM: upstream, UPSTREAM_PUBLIC: "true" } };
    server = pinned(process.execPath, [join(root, "test", "e2e", "harness", "worker-runner.mjs"), JSON.stringify(spec)], { env });
  }
  const base = `http://127.0.0.1:${port}`;
  await waitUrl(`${base}/v2/`, server.child, 120_000);
  return { ...server, base, metricsBase: runtime === "workerd" ? undefined : `http://127.0.0.1:${metricsPort}` };
}

/** The wrk script: a random single range of RANGE_LEN bytes of a BLOB_SIZE blob per request. */
export function writeWrkScript(dir) {
  const path = join(dir, "range.lua");
  writeFileSync(
    path,
    `local size = tonumber(os.getenv("BLOB_SIZE"))
local len = tonumber(os.getenv("RANGE_LEN"))
math.randomseed(1)
request = function()
  local off = math.random(0, size - len)
  return wrk.format("GET", nil, { ["Range"] = "bytes=" .. off .. "-" .. (off + len - 1) })
end
`,
  );
  return path;
}

const unitMs = { us: 0.001, ms: 1, s: 1000 };

/** wrk on the client CPU: requests/s and p99 latency (ms). Throws on non-2xx answers. */
export function runWrk(script, url, { size, length, connections, seconds }) {
  const r = spawnSync("taskset", ["-c", CLIENT_CPU, "wrk", "-t1", `-c${connections}`, `-d${seconds}s`, "--latency", "-s", script, url], {
    env: { ...process.env, BLOB_SIZE: String(size), RANGE_LEN: String(length) },
    encoding: "utf8",
  });
  const rps = /Requests\/sec:\s+([\d.]+)/.exec(r.stdout)?.[1];
  const p99 = /^\s+99%\s+([\d.]+)(us|ms|s)\s*$/m.exec(r.stdout);
  if (!rps || !p99 || /Non-2xx/.test(r.stdout)) throw new Error(`wrk failed on ${url}: ${r.stdout}${r.stderr}`);
  return { rps: Number(rps), p99: Number(p99[1]) * unitMs[p99[2]] };
}

/** `skiff bench ranges --json` on the client CPU. */
export function runSkiffBench(url, { sizeFlag, connections, seconds }) {
  const r = spawnSync(
    "taskset",
    ["-c", CLIENT_CPU, process.execPath, join(root, "bin", "skiff.js"), "bench", "ranges", url, "--duration", `${seconds}s`, "--concurrency", String(connections), "--size", sizeFlag, "--json"],
    { encoding: "utf8" },
  );
  if (r.status !== 0 && r.status !== 1) throw new Error(`skiff bench ranges failed (${r.status}): ${r.stderr}${r.stdout}`);
  return JSON.parse(r.stdout);
}
