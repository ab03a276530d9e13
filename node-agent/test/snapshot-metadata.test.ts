// The snapshotter's metadata file: changes in order, durable, and all or nothing.
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { Metadata } from "../src/snapshotter/metadata.ts";

const dirs: string[] = [];
const newDir = () => {
  const d = mkdtempSync(join(tmpdir(), "skiff-meta-"));
  dirs.push(d);
  return d;
};
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

const record = (id: number) => ({ id, kind: "committed" as const, parent: "", labels: {}, created: 1, updated: 1 });

describe("snapshot metadata", () => {
  it("a change is on disk when it resolves, and a reopened store has it", async () => {
    const dir = newDir();
    const meta = await Metadata.open(dir);
    await meta.change((s) => {
      s.snapshots.a = record(s.nextId++);
    });
    expect(JSON.parse(readFileSync(join(dir, "metadata.json"), "utf8")).snapshots.a.id).toBe(1);
    const again = await Metadata.open(dir);
    expect(again.get("a")?.id).toBe(1);
    expect(again.state.nextId).toBe(2);
  });

  it("a change that throws changes nothing, and later changes still run, in order", async () => {
    const meta = await Metadata.open(newDir());
    const order: string[] = [];
    const failing = meta.change((s) => {
      s.snapshots.x = record(9);
      order.push("x");
      throw new Error("refused");
    });
    const next = meta.change(async (s) => {
      await new Promise((r) => setTimeout(r, 5));
      s.snapshots.y = record(s.nextId++);
      order.push("y");
    });
    await expect(failing).rejects.toThrow("refused");
    await next;
    expect(order).toEqual(["x", "y"]);
    expect(meta.get("x")).toBeUndefined();
    expect(meta.get("y")?.id).toBe(1);
  });

  it("keys that are Object.prototype's names are only what was stored", async () => {
    const meta = await Metadata.open(newDir());
    expect(meta.get("constructor")).toBeUndefined();
    expect(meta.get("__proto__")).toBeUndefined();
  });
});
