// RecentChunks (node-agent/src/recent-chunks.ts): shared loads, the byte budget, and failures not kept.
import { describe, expect, test } from "vitest";
import { ChunkSlab, chunkSlab, SLOTS } from "../src/chunk-slab.ts";
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

describe("RecentChunks with chunks in the slab", () => {
  /** A chunk in a slab slot of its own, as a cache read leaves it: held once, for the loader's caller. */
  const slabChunk = (fill: number) => {
    const slab = chunkSlab();
    const slot = slab.take();
    if (slot === undefined) throw new Error("no free slot");
    return slab.view(slot, 100).fill(fill);
  };

  test("a chunk dropped from memory keeps its slot while a read still holds it", async () => {
    const slab = chunkSlab();
    const before = slab.held;
    const recent = new RecentChunks(150);
    const a = (await recent.get("a", async () => slabChunk(1)))!;
    expect(slab.held).toBe(before + 1);
    const b = (await recent.get("b", async () => slabChunk(2)))!; // a is dropped from memory
    // a's slot is still held by the read that got it: no new slot can be it.
    const taken = [];
    for (let slot = slab.take(); slot !== undefined; slot = slab.take()) taken.push(slot);
    expect(taken.length).toBe(SLOTS - before - 2);
    expect(a).toEqual(new Uint8Array(100).fill(1));
    for (const slot of taken) slab.releaseSlot(slot);
    recent.release(a); // a's slot is free now; b's is held by memory and by its read
    expect(slab.held).toBe(before + 1);
    recent.release(b);
    expect(slab.held).toBe(before + 1);
    await recent.get("c", async () => slabChunk(3)); // b is dropped: its slot goes back
    expect(slab.held).toBe(before + 1); // c only (held by memory and by this test), b given back
  });

  test("asks waiting on a load each hold the bytes, and none can lose them to a drop", async () => {
    const slab = chunkSlab();
    const before = slab.held;
    const recent = new RecentChunks(50); // under one chunk: each new chunk drops the one before
    const l = loader(() => slabChunk(4));
    const asks = [recent.get("a", l.load), recent.get("a", l.load)];
    l.release();
    const [x, y] = await Promise.all(asks);
    await recent.get("b", async () => slabChunk(5)); // a is dropped from memory
    expect(x).toEqual(new Uint8Array(100).fill(4));
    recent.release(x!);
    expect(slab.held).toBe(before + 2); // a (still held by y) and b
    recent.release(y!);
    expect(slab.held).toBe(before + 1);
  });

  test("the slab refuses to give back a slot more often than it was held", () => {
    const slab = new ChunkSlab(2, 64);
    const slot = slab.take()!;
    const view = slab.view(slot, 10);
    slab.retain(view);
    slab.release(view);
    slab.release(view);
    expect(() => slab.release(view)).toThrow(/released more often/);
    slab.release(new Uint8Array(10)); // bytes outside the slab: nothing to give back
    expect(slab.held).toBe(0);
  });
});
