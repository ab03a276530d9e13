// Garbage collection of the store, with the real registry. skiff killed with SIGKILL in the middle of
// a conversion leaves unfinished uploads; `skiff gc --dry-run` finds them, the next start sweeps
// them, and after it `skiff gc --dry-run` finds nothing and the image converts as a clean run did.
// `skiff gc` on a stopped store removes planted orphans and nothing that is in use.
import { execFile } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { transfer } from "./harness/http.ts";
import { buildImage, OciLayout, pushImage } from "./harness/images.ts";
import { sleep } from "./harness/processes.ts";
import { Registry } from "./harness/registry.ts";
import { Skiff, SKIFF_BIN } from "./harness/skiff.ts";
import { teardown } from "./harness/teardown.ts";
import { tempDir } from "./harness/workdir.ts";

const MiB = 1024 * 1024;
const REPO = "e2e/gc";
const run = promisify(execFile);

let registry: Registry;
let reference: Buffer;
const skiffs: Skiff[] = [];

async function start(dataDir: string): Promise<Skiff> {
  const s = await Skiff.start({ upstream: registry.url, dataDir });
  skiffs.push(s);
  return s;
}

const bootstrap = (s: Skiff) => transfer(`${s.url}/v2/${REPO}/_skiff/bootstrap/v1`, { headers: { "accept-encoding": "identity" } }, 120_000);

async function gc(dataDir: string, ...flags: string[]): Promise<string[]> {
  const { stdout } = await run(process.execPath, [SKIFF_BIN, "gc", "--data", dataDir, ...flags], { timeout: 60_000 });
  return stdout.trim().split("\n");
}

/** Bytes in the store's upload area now. */
function uploadBytes(dataDir: string): number {
  const tmp = join(dataDir, ".tmp");
  if (!existsSync(tmp)) return 0;
  return readdirSync(tmp).reduce((n, name) => n + (statSync(join(tmp, name), { throwIfNoEntry: false })?.size ?? 0), 0);
}

beforeAll(async () => {
  registry = await Registry.start({ name: "gc-registry" });
  const layout = new OciLayout(tempDir("gc-layout"));
  // Two layers of about 8 MiB of random bytes: their conversion takes long enough to be cut.
  buildImage(layout, { tag: "v1", seed: "store-gc", layers: 2, filesPerLayer: 8, fileSize: MiB });
  await pushImage(layout, "v1", `${registry.hostPort}/${REPO}:v1`);
  const clean = await start(tempDir("gc-clean"));
  const t = await bootstrap(clean);
  expect(t.status).toBe(200);
  reference = t.body;
  await clean.stop();
}, 180_000);

afterAll(async () => {
  for (const s of skiffs) await s.stop();
  await registry?.stop();
  await teardown();
});

describe("garbage collection", () => {
  test("after SIGKILL mid-conversion, the next start sweeps what the crash left, and gc --dry-run then finds nothing", async () => {
    const dataDir = tempDir("gc-crash");
    const first = await start(dataDir);
    const asked = bootstrap(first).catch(() => null); // cut by the kill
    // Bounded: until the conversion has written a MiB, then SIGKILL.
    for (let i = 0; i < 6000 && uploadBytes(dataDir) < MiB; i++) await sleep(2);
    expect(uploadBytes(dataDir)).toBeGreaterThanOrEqual(MiB);
    process.kill(first.pid, "SIGKILL");
    await asked;
    for (let i = 0; i < 500 && first.running; i++) await sleep(10);
    expect(first.running).toBe(false);

    const before = await gc(dataDir, "--dry-run");
    expect(before.join("\n")).toMatch(/^would remove \d+ unfinished uploads/m);
    expect(before.at(-1)).not.toMatch(/^would free 0 B in 0 objects$/);

    const second = await start(dataDir);
    expect(readdirSync(join(dataDir, ".tmp"))).toEqual([]);
    expect(await gc(dataDir, "--dry-run")).toEqual(["would free 0 B in 0 objects"]);
    const t = await bootstrap(second);
    expect(t.status).toBe(200);
    expect(t.body.equals(reference)).toBe(true);
    await second.stop();
    expect(await gc(dataDir, "--dry-run")).toEqual(["would free 0 B in 0 objects"]);
  }, 180_000);

  test("gc removes planted orphans from a stopped store, and nothing in use", async () => {
    const dataDir = tempDir("gc-planted");
    const s = await start(dataDir);
    expect((await bootstrap(s)).status).toBe(200);
    await s.stop();

    const orphan = join(dataDir, "converted", "layers", "sha256", "ab", "ab".repeat(32), "v1-c20-none");
    mkdirSync(orphan, { recursive: true });
    writeFileSync(join(orphan, "data"), Buffer.alloc(1000, 1)); // data without its bootstrap
    writeFileSync(join(dataDir, ".tmp", "left-by-a-crash"), Buffer.alloc(500, 2));
    mkdirSync(join(dataDir, "blobs", "sha256", "zz"), { recursive: true });

    const dry = await gc(dataDir, "--dry-run");
    expect(dry).toEqual([
      "would remove 1 unfinished uploads (500 B)",
      expect.stringMatching(/^would remove converted\/layers\/sha256\/ab\/(ab){32}\/v1-c20-none\/data \(1000 B\): an unpublished conversion/),
      "would remove 1 empty directories",
      "would free 1.5 KiB in 2 objects",
    ]);
    const done = await gc(dataDir);
    expect(done.at(-1)).toBe("freed 1.5 KiB in 2 objects");
    expect(existsSync(orphan)).toBe(false);
    expect(await gc(dataDir, "--dry-run")).toEqual(["would free 0 B in 0 objects"]);

    // What was in use is all there: a new proxy answers from the store, converting nothing.
    const again = await start(dataDir);
    const t = await bootstrap(again);
    expect(t.body.equals(reference)).toBe(true);
    expect(await again.metric("skiff_conversions_started_total")).toBe(0);
  }, 180_000);
});
