// Lazy API timings: `npm run bench:lazy [-- --write]`. A Distribution registry and skiff run on
// loopback; an image of three gzip layers (≥ 100 MB in all) is pushed with skopeo; then the time to
// the image bootstrap is measured cold (nothing cached or converted), warm in the same process, and
// after a restart of skiff on the same store. Then chunk serving: every chunk of the largest layer
// fetched once by range from a freshly started skiff (cold: page cache dropped when running as
// root), and again and again for a few seconds (warm), with `skiff bench ranges` checking each
// answer. Needs docker-registry and skopeo (npm test installs them).
import { execFileSync, spawn } from "node:child_process";
import { createCipheriv, createHash } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";
import { writeLayout } from "./oci-layout.mjs";
import { machine, replaceSection } from "./report.mjs";
import { serveEnv } from "./servers.mjs";

const root = fileURLToPath(new URL("..", import.meta.url));
const work = mkdtempSync(join(tmpdir(), "skiff-bench-lazy-"));
const children = [];

const freePort = () =>
  new Promise((resolve) => {
    const s = createServer().listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });

async function waitFor(url, timeoutMs = 20_000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    try {
      if ((await fetch(url)).ok) return;
    } catch {
      // not up yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${url} did not come up`);
}

function start(command, args, stderr = "inherit", env = process.env) {
  const child = spawn(command, args, { stdio: ["ignore", "ignore", stderr], env });
  children.push(child);
  return child;
}

async function stop(child) {
  if (child.exitCode !== null) return;
  child.kill("SIGTERM");
  await new Promise((r) => child.once("exit", r));
}

/** A tar of one directory of files: half AES-CTR noise, half text, gzip'd; about `megabytes` MB of content. */
function gzipLayer(seed, megabytes) {
  const dir = join(work, `layer-${seed}`);
  mkdirSync(join(dir, `app${seed}`), { recursive: true });
  const cipher = createCipheriv("aes-128-ctr", createHash("sha256").update(seed).digest().subarray(0, 16), Buffer.alloc(16));
  for (let i = 0; i < megabytes / 2; i++) {
    writeFileSync(join(dir, `app${seed}`, `blob${i}.bin`), cipher.update(Buffer.alloc(1 << 20)));
    writeFileSync(join(dir, `app${seed}`, `text${i}.txt`), Buffer.from(`line ${seed} ${i} lorem ipsum dolor sit amet\n`.repeat(24_000).slice(0, 1 << 20)));
  }
  const tar = execFileSync("tar", ["-C", dir, "--sort=name", "--mtime=@0", "--owner=0", "--group=0", "-cf", "-", "."], { maxBuffer: 1 << 30 });
  rmSync(dir, { recursive: true });
  return gzipSync(tar, { level: 1 });
}

async function startSkiff(upstream, data) {
  const port = await freePort();
  const child = start("node", [join(root, "bin", "skiff.js"), "serve", "--upstream", upstream, "--host", "127.0.0.1", "--port", String(port), "--data", data, "--convert-wait", "600", "--metrics-address", "off"], "ignore", serveEnv());
  await waitFor(`http://127.0.0.1:${port}/v2/`);
  return { child, url: `http://127.0.0.1:${port}` };
}

async function timeBootstrap(url) {
  const t = performance.now();
  const res = await fetch(`${url}/v2/bench/app/_skiff/bootstrap/bench`);
  const body = new Uint8Array(await res.arrayBuffer());
  if (res.status !== 200) throw new Error(`bootstrap answered ${res.status}`);
  return { seconds: (performance.now() - t) / 1000, bytes: body.byteLength };
}

/** Bench ranges over every chunk of the image's largest layer: once from a fresh process, then repeatedly. */
async function chunkServing(skiff, upstream, data) {
  const { Bootstrap } = await import(join(root, "dist", "src", "format", "decode.js"));
  const res = await fetch(`${skiff.url}/v2/bench/app/_skiff/bootstrap/bench`);
  const params = res.headers.get("skiff-params");
  const b = Bootstrap.decode(new Uint8Array(await res.arrayBuffer()));
  const byBlob = new Map();
  for (let i = 0; i < b.chunkCount; i++) {
    const c = b.chunk(i);
    if (!byBlob.has(c.blob)) byBlob.set(c.blob, []);
    byBlob.get(c.blob).push(c);
  }
  const [blob, list] = [...byBlob].sort((x, y) => y[1].length - x[1].length)[0];
  const pattern = join(work, "chunks.txt");
  writeFileSync(pattern, list.map((c) => `${c.storedOffset} ${c.storedSize}`).join("\n"));
  const bytes = list.reduce((n, c) => n + c.storedSize, 0);
  await stop(skiff.child);
  let dropped = false;
  try {
    execFileSync("sh", ["-c", "sync && echo 3 > /proc/sys/vm/drop_caches"], { stdio: "ignore" });
    dropped = true;
  } catch {
    // not root: the page cache stays warm
  }
  const fresh = await startSkiff(upstream, data);
  skiff.child = fresh.child;
  const url = `${fresh.url}/v2/bench/app/_skiff/layers/${b.blob(blob).layerDigest}/${params}/data`;
  const bench = (label, extra) => {
    const r = JSON.parse(execFileSync(process.execPath, [join(root, "bin", "skiff.js"), "bench", "ranges", url, "--pattern", pattern, "--concurrency", "16", "--json", ...extra], { encoding: "utf8" }));
    if (r.errors > 0) throw new Error(`chunk serving: ${r.errors} bad answers ${JSON.stringify(r.errorsByKind)}`);
    return { label, ...r };
  };
  const cold = bench(`cold: each chunk once, fresh process${dropped ? ", page cache dropped" : ""}`, ["--requests", String(list.length)]);
  const warm = bench("warm: the same chunks again for 4 s", ["--duration", "4s"]);
  return { count: list.length, bytes, params, cold, warm };
}

const out = [];
try {
  const layers = [gzipLayer("base", 120), gzipLayer("deps", 60), gzipLayer("app", 40)];
  const total = layers.reduce((n, l) => n + l.length, 0);
  const layout = join(work, "layout");
  writeLayout(layout, layers);

  const regPort = await freePort();
  const regConfig = join(work, "registry.yml");
  writeFileSync(regConfig, `version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: ${join(work, "registry")}\nhttp:\n  addr: 127.0.0.1:${regPort}\n`);
  start("docker-registry", ["serve", regConfig], "ignore");
  await waitFor(`http://127.0.0.1:${regPort}/v2/`);
  execFileSync("skopeo", ["copy", "--quiet", "--dest-tls-verify=false", "--preserve-digests", `oci:${layout}:bench`, `docker://127.0.0.1:${regPort}/bench/app:bench`]);

  const data = join(work, "skiff-data");
  let skiff = await startSkiff(`http://127.0.0.1:${regPort}`, data);
  const cold = await timeBootstrap(skiff.url);
  const warm = [];
  for (let i = 0; i < 5; i++) warm.push((await timeBootstrap(skiff.url)).seconds);
  await stop(skiff.child);
  skiff = await startSkiff(`http://127.0.0.1:${regPort}`, data);
  const restarted = await timeBootstrap(skiff.url);
  const chunks = await chunkServing(skiff, `http://127.0.0.1:${regPort}`, data);
  await stop(skiff.child);

  warm.sort((a, b) => a - b);
  out.push(
    `An image of 3 gzip layers, ${(total / 1e6).toFixed(0)} MB compressed (${layers.map((l) => `${(l.length / 1e6).toFixed(0)} MB`).join(" + ")}), half incompressible; skiff and the registry on loopback; bootstrap of ${cold.bytes} bytes.`,
    "",
    "| request | time to the whole bootstrap |",
    "|---|---|",
    `| cold: nothing cached, every layer fetched, verified and converted | ${cold.seconds.toFixed(2)} s |`,
    `| warm: same process (median of 5) | ${(warm[2] * 1000).toFixed(1)} ms |`,
    `| warm after a restart on the same store | ${(restarted.seconds * 1000).toFixed(1)} ms |`,
    "",
    `Chunk serving: the ${chunks.count} chunks (${(chunks.bytes / 1e6).toFixed(0)} MB stored, ${chunks.params}) of the largest layer, by range from its data blob, 16 connections, every answer checked by \`skiff bench ranges\`:`,
    "",
    "| run | requests | requests/s | MB/s | p50 ms | p99 ms |",
    "|---|---:|---:|---:|---:|---:|",
    ...[chunks.cold, chunks.warm].map((r) => `| ${r.label} | ${r.requests} | ${r.rps.toFixed(0)} | ${r.mbps.toFixed(0)} | ${r.p50.toFixed(2)} | ${r.p99.toFixed(2)} |`),
    "",
  );
} finally {
  for (const c of children) await stop(c);
  rmSync(work, { recursive: true, force: true });
}

const section = [`Measured on ${machine()}.`, "", "Command: `npm run bench:lazy -- --write`", "", ...out].join("\n");
console.log(section);
if (process.argv.includes("--write")) replaceSection(join(root, "docs", "benchmarks.md"), "lazy", "Lazy API: time to an image bootstrap, and chunk serving", section);

