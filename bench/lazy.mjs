// Lazy API timings: `npm run bench:lazy [-- --write]`. A Distribution registry and skiff run on
// loopback; an image of three gzip layers (≥ 100 MB in all) is pushed with skopeo; then the time to
// the image bootstrap is measured cold (nothing cached or converted), warm in the same process, and
// after a restart of skiff on the same store. Needs docker-registry and skopeo (npm test installs them).
import { execFileSync, spawn } from "node:child_process";
import { createCipheriv, createHash } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";
import { machine, replaceSection } from "./report.mjs";

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

function start(command, args, stderr = "inherit") {
  const child = spawn(command, args, { stdio: ["ignore", "ignore", stderr] });
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

function writeLayout(dir, layers) {
  const blobs = join(dir, "blobs", "sha256");
  mkdirSync(blobs, { recursive: true });
  const put = (bytes) => {
    const hex = createHash("sha256").update(bytes).digest("hex");
    writeFileSync(join(blobs, hex), bytes);
    return { digest: `sha256:${hex}`, size: bytes.length };
  };
  const config = put(Buffer.from(JSON.stringify({ architecture: "amd64", os: "linux", rootfs: { type: "layers", diff_ids: [] }, config: {} })));
  const manifest = put(
    Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: "application/vnd.oci.image.manifest.v1+json",
        config: { mediaType: "application/vnd.oci.image.config.v1+json", ...config },
        layers: layers.map((l) => ({ mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", ...put(l) })),
      }),
    ),
  );
  writeFileSync(join(dir, "oci-layout"), '{"imageLayoutVersion":"1.0.0"}');
  writeFileSync(
    join(dir, "index.json"),
    JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: "application/vnd.oci.image.manifest.v1+json", ...manifest, annotations: { "org.opencontainers.image.ref.name": "bench" } }] }),
  );
}

async function startSkiff(upstream, data) {
  const port = await freePort();
  const child = start("node", [join(root, "bin", "skiff.js"), "serve", "--upstream", upstream, "--host", "127.0.0.1", "--port", String(port), "--data", data, "--convert-wait", "600"], "ignore");
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
  );
} finally {
  for (const c of children) await stop(c);
  rmSync(work, { recursive: true, force: true });
}

const section = [`Measured on ${machine()}.`, "", "Command: `npm run bench:lazy -- --write`", "", ...out].join("\n");
console.log(section);
if (process.argv.includes("--write")) replaceSection(join(root, "docs", "benchmarks.md"), "lazy", "Lazy API: time to an image bootstrap", section);

