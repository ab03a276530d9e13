import { mkdtemp, readdir, readlink, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { ReadHandles } from "../../src/store/read-handles.ts";

const dirs: string[] = [];
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

/** This process's open descriptors on files under `dir`. */
async function openUnder(dir: string): Promise<number> {
  let n = 0;
  for (const fd of await readdir("/proc/self/fd")) {
    const target = await readlink(`/proc/self/fd/${fd}`).catch(() => "");
    if (target.startsWith(dir)) n++;
  }
  return n;
}

const settle = () => new Promise((resolve) => setTimeout(resolve, 50));

describe("ReadHandles", () => {
  it("keeps at most its limit of files open, shares a handle between readers and closes evicted ones after their last reader", async () => {
    const dir = await mkdtemp(join(tmpdir(), "skiff-handles-"));
    dirs.push(dir);
    const paths = await Promise.all(Array.from({ length: 10 }, async (_, i) => {
      const p = join(dir, `f${i}`);
      await writeFile(p, `file ${i}`);
      return p;
    }));
    const handles = new ReadHandles(3);
    const first = await handles.acquire(paths[0]!);
    const again = await handles.acquire(paths[0]!);
    expect(again.fd).toBe(first.fd);
    expect(first.size).toBe(6);
    for (const p of paths.slice(1)) (await handles.acquire(p)).release();
    await settle();
    // paths[0] was evicted long ago but is still being read: it stays open, with the last three.
    expect(await openUnder(dir)).toBe(4);
    first.release();
    first.release(); // a second release is ignored
    await settle();
    expect(await openUnder(dir)).toBe(4);
    again.release();
    await settle();
    expect(await openUnder(dir)).toBe(3);
  });

  it("opens afresh after forget, and rejects for a missing file without keeping anything", async () => {
    const dir = await mkdtemp(join(tmpdir(), "skiff-handles-"));
    dirs.push(dir);
    const p = join(dir, "f");
    await writeFile(p, "one");
    const handles = new ReadHandles();
    const a = await handles.acquire(p);
    a.release();
    handles.forget(p);
    await settle();
    expect(await openUnder(dir)).toBe(0);
    await writeFile(p, "replaced");
    const b = await handles.acquire(p);
    expect(b.size).toBe(8);
    b.release();
    await expect(handles.acquire(join(dir, "missing"))).rejects.toMatchObject({ code: "ENOENT" });
    await writeFile(join(dir, "missing"), "now here");
    const c = await handles.acquire(join(dir, "missing"));
    expect(c.size).toBe(8);
    c.release();
  });
});
