// A node_modules-like layer of 300,000 small files (340,000 tar entries) converts in a Node process
// whose V8 heap is limited to 128 MB, as a Worker's is, and what it holds at the peak (V8 heap and
// array buffers, after a full collection) stays under 300 bytes per entry above a fixed base. The
// conversion runs the built converter (dist) through bench/entry-memory-child.mjs, as
// bench:entry-memory does.
import { afterAll, describe, expect, test } from "vitest";
import { spawnSync } from "node:child_process";
import { mkdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { writeNodeModulesLayer } from "../../bench/entry-memory-layer.mjs";
import { REPO_ROOT } from "./harness/skiff.ts";
import { tempDir } from "./harness/workdir.ts";
import { teardown } from "./harness/teardown.ts";

const MiB = 2 ** 20;

afterAll(async () => {
  await teardown();
});

describe("memory per tar entry", () => {
  test("300,000 files convert under --max-old-space-size=128, at under 300 bytes per entry", () => {
    const dir = tempDir("entry-memory");
    const path = join(dir, "layer.tar.gz");
    const layer = writeNodeModulesLayer(path, 300_000);
    const store = join(dir, "store");
    mkdirSync(store);
    const child = join(REPO_ROOT, "bench", "entry-memory-child.mjs");
    const r = spawnSync(process.execPath, ["--max-old-space-size=128", "--expose-gc", child, path, layer.digest, String(layer.size), store, "--sample"], { encoding: "utf8", timeout: 240_000 });
    rmSync(dir, { recursive: true, force: true });
    expect(r.status, r.stderr.slice(-2000)).toBe(0);
    const m = JSON.parse(r.stdout.trim().split("\n").at(-1)!) as { entries: number; inodes: number; baseHeap: number; peakHeap: number; atEncode: number; seconds: number };
    expect(m.entries).toBe(layer.entries);
    expect(m.inodes).toBeGreaterThan(300_000);
    // The fixed base: chunks in flight, stream and store buffers (src/convert/layer.ts, CONVERSION_BASE_BYTES).
    const perEntry = (m.peakHeap - m.baseHeap - 16 * MiB) / m.entries;
    console.log(`entry memory: ${m.entries} entries in ${m.seconds.toFixed(1)} s; peak ${((m.peakHeap - m.baseHeap) / MiB).toFixed(1)} MiB over the base, ${perEntry.toFixed(0)} bytes per entry over 16 MiB`);
    expect(perEntry).toBeLessThan(300);
  }, 300_000);
});
