// Incremental sha256 inside workerd, the Workers runtime: node:crypto's createHash (nodejs_compat)
// against crypto.DigestStream, over the same 256 MiB in 64 KiB pieces. The Worker entry hashes with
// whichever is faster here. Runs a throwaway Worker under `wrangler dev` on loopback.
//   node bench/worker-hash.mjs [--write]
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { machine, median, replaceSection } from "./report.mjs";

const root = resolve(fileURLToPath(new URL("..", import.meta.url)));
const ROUNDS = 5;

const worker = `
import { createHash } from "node:crypto";
const piece = new Uint8Array(64 * 1024).map((_, i) => (i * 7) & 0xff);
const PIECES = 4096; // 256 MiB
export default { async fetch() {
  let t = performance.now();
  const h = createHash("sha256");
  for (let i = 0; i < PIECES; i++) h.update(piece);
  const a = h.digest("hex");
  const node = performance.now() - t;
  t = performance.now();
  const ds = new crypto.DigestStream("SHA-256");
  const w = ds.getWriter();
  for (let i = 0; i < PIECES; i++) await w.write(piece);
  await w.close();
  const b = [...new Uint8Array(await ds.digest)].map((x) => x.toString(16).padStart(2, "0")).join("");
  const digestStream = performance.now() - t;
  if (a !== b) throw new Error("digests differ");
  return Response.json({ node, digestStream });
} };`;

const freePort = () => new Promise((ok) => { const s = createServer().listen(0, "127.0.0.1", () => { const p = s.address().port; s.close(() => ok(p)); }); });

const dir = mkdtempSync(join(tmpdir(), "skiff-bench-worker-"));
writeFileSync(join(dir, "w.js"), worker);
writeFileSync(join(dir, "wrangler.toml"), `name = "bench"\nmain = "w.js"\ncompatibility_date = "2026-04-01"\ncompatibility_flags = ["nodejs_compat"]\n`);
const port = await freePort();
const child = spawn(join(root, "node_modules", ".bin", "wrangler"), ["dev", "--ip", "127.0.0.1", "--port", String(port), "--inspector-port", String(await freePort()), "--show-interactive-dev-session=false"], {
  cwd: dir, detached: true, stdio: "ignore", env: { ...process.env, WRANGLER_SEND_METRICS: "false", CI: "true" },
});
try {
  let ready = false;
  for (let i = 0; i < 120 && !ready; i++) {
    await new Promise((r) => setTimeout(r, 500));
    ready = await fetch(`http://127.0.0.1:${port}/`, { method: "HEAD" }).then(() => true, () => false);
  }
  if (!ready) throw new Error("wrangler dev did not start");
  const runs = [];
  for (let i = 0; i < ROUNDS; i++) runs.push(await (await fetch(`http://127.0.0.1:${port}/`)).json());
  const mbps = (ms) => ((256 * 2 ** 20) / 1e6 / (ms / 1000)).toFixed(0);
  const node = median(runs.map((r) => r.node));
  const ds = median(runs.map((r) => r.digestStream));
  const table = [
    "| sha256 in workerd, 256 MiB in 64 KiB pieces | median of " + ROUNDS + " | MB/s |",
    "|---|---|---|",
    `| node:crypto createHash (nodejs_compat) | ${node.toFixed(0)} ms | ${mbps(node)} |`,
    `| crypto.DigestStream | ${ds.toFixed(0)} ms | ${mbps(ds)} |`,
  ].join("\n");
  console.log(table);
  if (process.argv.includes("--write")) {
    const body = `${machine()}, workerd from wrangler ${(await import(join(root, "node_modules", "wrangler", "package.json"), { with: { type: "json" } })).default.version}.\nCommand: \`npm run bench:worker-hash -- --write\`.\n\n${table}\n\nThe Worker entry hashes with node:crypto: it is ${(ds / node).toFixed(2)}× as fast as DigestStream here and, being synchronous, fits the hasher interface every runtime shares (DigestStream finishes asynchronously).`;
    replaceSection(join(root, "docs", "benchmarks.md"), "worker-hash", "Hashing in workerd", body);
  }
} finally {
  try { process.kill(-child.pid, "SIGTERM"); } catch { /* gone */ }
  rmSync(dir, { recursive: true, force: true });
}
