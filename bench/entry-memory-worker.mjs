// The workerd half of bench:entry-memory: runs the e2e test that converts a node_modules-like layer
// of 300,000 files through the Worker in workerd (test/e2e/worker-entry-limit.test.ts: a local
// registry, the Worker bundled as for a deployment, workerd's V8 heap limited to 128 MB, its heap
// read through workerd's inspector)
// and returns the line it reports.
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));

export async function convertInWorkerd() {
  const r = spawnSync(join(root, "node_modules", ".bin", "vitest"), ["run", "test/e2e/worker-entry-limit.test.ts", "-t", "convert in workerd within"], { cwd: root, encoding: "utf8", timeout: 900_000 });
  const line = /worker entry limit: (.*)/.exec(r.stdout ?? "")?.[1];
  if (r.status !== 0 || !line) return { text: `failed (vitest exit ${r.status ?? r.signal}): ${(r.stdout ?? "").split("\n").filter((l) => /Error|expected/.test(l)).slice(0, 3).join(" / ").slice(0, 400)}` };
  return { text: line.trim() };
}
