// RecentChunks (node-agent/src/recent-chunks.ts): shared loads, the byte budget, and failures not kept.
import { describe, expect, test } from "vitest";
import { RecentChunks } from "../src/recent-chunks.ts";

const bytes = (n: number, fill = 1) => new Uint8Array(n).fill(fill);

/** A loader that counts its calls and answers when told to. */
function loader(answer: () => Uint8Array | null | Error) {
  const calls = { n: 0 };
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const load = async () => {
    calls.n++;
    await gate;
    const a = answer();
    if (a instanceof Error) throw a;
    return a;
  };
  return { load, calls, release };
}

describe("RecentChunks", () => {
  test("concurrent asks for one chunk share one load; later asks are served from memory", async () => {
    const recent = new RecentChunks(1024);
    const l = loader(() => bytes(100, 7));
    const a = recent.get("a", l.load);
    const b = recent.get("a", l.load);
    l.release();
    expect(await a).toEqual(bytes(100, 7));
    expect(await b).toBe(await a);
    expect(await recent.get("a", l.load)).toBe(await a);
    expect(l.calls.n).toBe(1);
  });

  test("past the byte budget the least recently used chunks go first", async () => {
    const recent = new RecentChunks(250);
    const loads = { n: 0 };
    const load = (fill: number) => async () => (loads.n++, bytes(100, fill));
    await recent.get("a", load(1));
    await recent.get("b", load(2));
    await recent.get("a", load(1)); // a is now the most recent
    await recent.get("c", load(3)); // 300 bytes: b goes
    expect(loads.n).toBe(3);
    await recent.get("a", load(1));
    await recent.get("c", load(3));
    expect(loads.n).toBe(3);
    await recent.get("b", load(2));
    expect(loads.n).toBe(4);
  });

  test("a chunk bigger than the budget is still kept until the next one", async () => {
    const recent = new RecentChunks(10);
    let loads = 0;
    const load = async () => (loads++, bytes(100));
    await recent.get("big", load);
    await recent.get("big", load);
    expect(loads).toBe(1);
    await recent.get("other", load);
    await recent.get("big", load);
    expect(loads).toBe(3);
  });

  test("a failed or empty load is not kept: the next ask loads again", async () => {
    const recent = new RecentChunks(1024);
    const failing = loader(() => new Error("disk"));
    const asked = recent.get("a", failing.load);
    failing.release();
    await expect(asked).rejects.toThrow("disk");
    const missing = loader(() => null);
    const second = recent.get("a", missing.load);
    missing.release();
    expect(await second).toBeNull();
    const ok = loader(() => bytes(5));
    const third = recent.get("a", ok.load);
    ok.release();
    expect(await third).toEqual(bytes(5));
    expect([failing.calls.n, missing.calls.n, ok.calls.n]).toEqual([1, 1, 1]);
  });

  test("put replaces what was kept under the key", async () => {
    const recent = new RecentChunks(1024);
    await recent.get("a", async () => bytes(10, 1));
    recent.put("a", bytes(10, 2));
    expect(await recent.get("a", async () => bytes(10, 3))).toEqual(bytes(10, 2));
  });
});
