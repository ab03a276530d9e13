// The bounded store (src/store/bounded.ts) and garbage collection (src/store/gc.ts), over the memory
// store and the filesystem store.
import { mkdir, mkdtemp, readdir, rm, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { BoundedStore } from "../../src/store/bounded.ts";
import { FsStore } from "../../src/store/fs.ts";
import { sweepGarbage, STALE_STEPS_MS } from "../../src/store/gc.ts";
import { MemoryStore } from "../../src/store/memory.ts";
import { getBytes, listAll, putBytes, StoreFullError } from "../../src/store/store.ts";

const blob = (n: number) => `blobs/sha256/${String(n).padStart(2, "0")}/${String(n).padStart(64, "0")}`;
const layer = (n: number) => `converted/layers/sha256/aa/${String(n).padStart(64, "a")}/v1-c20-none`;
const bytes = (n: number) => new Uint8Array(n).fill(7);

async function bounded(maxBytes: number, o: { now?: () => number; maxAgeMs?: number; inner?: MemoryStore } = {}) {
  const inner = o.inner ?? new MemoryStore();
  const store = await BoundedStore.open(inner, { maxBytes, ...o });
  const evicted: string[][] = [];
  store.watchEvictions((keys) => evicted.push(keys));
  return { inner, store, evicted };
}

describe("BoundedStore", () => {
  it("evicts what was used longest ago, and stays within the bound after every write", async () => {
    const { inner, store } = await bounded(1000);
    for (let i = 0; i < 3; i++) await putBytes(store, blob(i), bytes(300));
    await getBytes(store, blob(0)); // blob 0 is now the most recently used
    await putBytes(store, blob(3), bytes(300));
    expect(inner.keys().sort()).toEqual([blob(0), blob(2), blob(3)].sort());
    expect(store.usage()).toMatchObject({ bytes: 900, objects: 3, evictions: 1, evictedBytes: 300 });
    for (let i = 4; i < 10; i++) {
      await putBytes(store, blob(i), bytes(300));
      expect(store.usage().bytes).toBeLessThanOrEqual(1000);
    }
  });

  it("evicts a converted layer's data and bootstrap together, the bootstrap first", async () => {
    const { inner, store, evicted } = await bounded(1000);
    await putBytes(store, `${layer(1)}/data`, bytes(500));
    await putBytes(store, `${layer(1)}/bootstrap`, bytes(100));
    await putBytes(store, blob(1), bytes(600));
    expect(evicted).toEqual([[`${layer(1)}/bootstrap`, `${layer(1)}/data`]]);
    expect(inner.keys()).toEqual([blob(1)]);
  });

  it("never evicts manifests, tags and links, and refuses a write that can't fit without them", async () => {
    const { inner, store } = await bounded(1000);
    await putBytes(store, "manifests/sha256/ab/" + "b".repeat(64), bytes(600));
    await putBytes(store, "repositories/app/_tags/v1/x", bytes(100));
    await putBytes(store, blob(1), bytes(200));
    await expect(putBytes(store, blob(2), bytes(400))).rejects.toBeInstanceOf(StoreFullError);
    expect(inner.keys()).not.toContain(blob(2));
    expect(inner.keys()).toContain("manifests/sha256/ab/" + "b".repeat(64));
    expect(store.usage().bytes).toBeLessThanOrEqual(1000);
  });

  it("does not evict what is being read or written", async () => {
    const { inner, store } = await bounded(1000);
    await putBytes(store, blob(1), bytes(400));
    await putBytes(store, blob(2), bytes(400));
    const reading = (await store.get(blob(1)))!; // the older one, held open
    const writing = await store.put(blob(3));
    await writing.write(bytes(150));
    await putBytes(store, blob(4), bytes(100)); // needs room: blob 2 goes, not blob 1 nor blob 3
    expect(inner.keys()).toContain(blob(1));
    expect(inner.keys()).not.toContain(blob(2));
    await expect(putBytes(store, blob(5), bytes(700))).rejects.toBeInstanceOf(StoreFullError); // only blob 4 may go
    await reading.cancel();
    await writing.commit();
    expect(inner.keys()).toContain(blob(3));
    await putBytes(store, blob(5), bytes(700)); // now blob 1 and blob 3 may go too
    expect(store.usage().bytes).toBeLessThanOrEqual(1000);
  });

  it("gives back the room and the hold of a write whose commit failed", async () => {
    const inner = new MemoryStore();
    let failCommits = true;
    const flaky = {
      stat: (key: string) => inner.stat(key),
      get: (key: string) => inner.get(key),
      delete: (key: string) => inner.delete(key),
      list: (prefix?: string) => inner.list(prefix),
      put: async (key: string) => {
        const upload = await inner.put(key);
        return { ...upload, commit: () => (failCommits ? Promise.reject(new Error("disk gone")) : upload.commit()) };
      },
    };
    const store = await BoundedStore.open(flaky, { maxBytes: 1000 });
    await expect(putBytes(store, blob(1), bytes(600))).rejects.toThrow("disk gone");
    expect(store.usage().bytes).toBe(0);
    failCommits = false;
    await putBytes(store, blob(2), bytes(1000)); // all the room is free again
    await putBytes(store, blob(3), bytes(1000)); // and blob 2, not held by anything, can go
    expect(inner.keys()).toEqual([blob(3)]);
  });

  it("keeps a key it was told to keep, stored before or after", async () => {
    const { inner, store } = await bounded(1000);
    await putBytes(store, blob(1), bytes(300));
    store.keep(blob(1));
    store.keep(blob(2));
    await putBytes(store, blob(2), bytes(300));
    await putBytes(store, blob(3), bytes(300));
    await putBytes(store, blob(4), bytes(300)); // only blob 3 may go
    expect(inner.keys().sort()).toEqual([blob(1), blob(2), blob(4)]);
    await expect(putBytes(store, blob(5), bytes(500))).rejects.toBeInstanceOf(StoreFullError); // blob 4 is not enough
  });

  it("evicts at start what a store holds over the bound, oldest first", async () => {
    const inner = new MemoryStore();
    for (let i = 0; i < 4; i++) {
      await putBytes(inner, blob(i), bytes(300));
      await new Promise((r) => setTimeout(r, 5)); // distinct write times
    }
    const { store } = await bounded(700, { inner });
    expect(inner.keys().sort()).toEqual([blob(2), blob(3)]);
    expect(store.usage().bytes).toBe(600);
  });

  it("takes a listing already made instead of listing the store again (one walk at start)", async () => {
    const inner = new MemoryStore();
    for (let i = 0; i < 3; i++) await putBytes(inner, blob(i), bytes(300));
    const listed = await listAll(inner);
    let lists = 0;
    const counting = Object.assign(Object.create(inner) as MemoryStore, {
      list: (prefix?: string) => (lists++, inner.list(prefix)),
    });
    expect(await sweepGarbage(counting, { listed })).toEqual([]);
    // The listing given is what the bound counts: one object left out is not in the accounting.
    const store = await BoundedStore.open(counting, { maxBytes: 10_000, listed: listed.filter((o) => o.key !== blob(2)) });
    expect(lists).toBe(0);
    expect(store.usage()).toMatchObject({ bytes: 600, objects: 2 });
  });

  it("evicts what went unused past the max age, and counts a unit stored again after its eviction", async () => {
    let now = 1_000_000;
    const { inner, store } = await bounded(10_000, { now: () => now, maxAgeMs: 60_000 });
    await putBytes(store, blob(1), bytes(10));
    now += 50_000;
    await putBytes(store, blob(2), bytes(10));
    now += 20_000;
    expect(await store.sweepAged()).toBe(1);
    expect(inner.keys()).toEqual([blob(2)]);
    await putBytes(store, blob(1), bytes(10));
    expect(store.usage().restored).toBe(1);
  });
});

describe("sweepGarbage", () => {
  const HOUR = 3600_000;

  async function storeWith(objects: Record<string, number>, now: number) {
    const inner = new MemoryStore();
    for (const key of Object.keys(objects)) await putBytes(inner, key, bytes(1));
    // The memory store records write times; list them as given instead.
    const store = Object.assign(Object.create(inner) as MemoryStore, {
      async *list() {
        for await (const o of inner.list()) yield { ...o, modifiedMs: now - objects[o.key]! };
      },
      delete: (key: string) => inner.delete(key),
    });
    return { inner, store };
  }

  it("finds unpublished and half-gone conversions, stale steps and orphan records, and nothing in use", async () => {
    const now = 10 * STALE_STEPS_MS;
    const published = layer(1);
    const crashed = layer(2);
    const inSteps = layer(3);
    const abandoned = layer(4);
    const dataLost = layer(5);
    const manifest = "manifests/sha256/ab/" + "b".repeat(64);
    const { inner, store } = await storeWith(
      {
        [`${published}/data`]: HOUR,
        [`${published}/bootstrap`]: HOUR,
        [`${published}/steps/checkpoint`]: HOUR,
        [`${crashed}/data`]: HOUR,
        [`${inSteps}/data`]: HOUR,
        [`${inSteps}/steps/checkpoint`]: HOUR,
        [`${inSteps}/steps/segment-9`]: HOUR,
        [`${abandoned}/data`]: 2 * STALE_STEPS_MS,
        [`${abandoned}/steps/checkpoint`]: 2 * STALE_STEPS_MS,
        [`${dataLost}/bootstrap`]: HOUR,
        [manifest]: HOUR,
        [`${manifest}.meta`]: HOUR,
        ["manifests/sha256/cd/" + "c".repeat(64) + ".meta"]: HOUR,
        [blob(1)]: HOUR,
        ["repositories/app/_blobs/sha256/" + "0".repeat(64)]: HOUR,
      },
      now,
    );
    const expected = [
      `${published}/steps/checkpoint`,
      `${crashed}/data`,
      `${abandoned}/data`,
      `${abandoned}/steps/checkpoint`,
      `${dataLost}/bootstrap`,
      "manifests/sha256/cd/" + "c".repeat(64) + ".meta",
    ].sort();
    const dry = await sweepGarbage(store, { dryRun: true, now: () => now });
    expect(dry.map((g) => g.key).sort()).toEqual(expected);
    expect(inner.size).toBe(15);
    // A running proxy's grace leaves what was written within it.
    expect(await sweepGarbage(store, { dryRun: true, graceMs: 2 * HOUR, now: () => now })).toHaveLength(2);
    await sweepGarbage(store, { now: () => now });
    expect(inner.size).toBe(15 - expected.length);
    expect(await sweepGarbage(store, { now: () => now })).toEqual([]);
  });

  it("finds the records of blob fetches in steps that were abandoned or whose blob is stored, not those under way", async () => {
    const now = 10 * STALE_STEPS_MS;
    const fetchOf = (n: number) => `fetches/sha256/${String(n).padStart(2, "0")}/${String(n).padStart(64, "0")}`;
    const { store } = await storeWith(
      {
        [blob(1)]: 3 * HOUR,
        [`${fetchOf(1)}/checkpoint`]: 2 * HOUR, // its blob is stored
        [`${fetchOf(1)}/lease`]: 2 * HOUR,
        [`${fetchOf(2)}/checkpoint`]: HOUR, // under way
        [`${fetchOf(2)}/lease`]: HOUR,
        [`${fetchOf(3)}/checkpoint`]: STALE_STEPS_MS + HOUR, // abandoned
      },
      now,
    );
    const found = await sweepGarbage(store, { dryRun: true, now: () => now });
    expect(found.map((g) => g.key).sort()).toEqual([`${fetchOf(1)}/checkpoint`, `${fetchOf(1)}/lease`, `${fetchOf(3)}/checkpoint`].sort());
  });
});

describe("FsStore listing and empty directories", () => {
  const dirs: string[] = [];
  afterEach(async () => {
    for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
  });

  it("lists objects with sizes and times, not uploads; removes empty directories only", async () => {
    const root = await mkdtemp(join(tmpdir(), "skiff-gc-"));
    dirs.push(root);
    const store = await new FsStore(root).init();
    await putBytes(store, blob(1), bytes(5));
    await putBytes(store, `${layer(1)}/data`, bytes(3));
    await writeFile(join(root, ".tmp", "left-by-a-crash"), bytes(9));
    await utimes(join(root, blob(1)), 1000, 1000);
    const listed = [];
    for await (const o of store.list()) listed.push(o);
    expect(listed.sort((a, b) => a.key.localeCompare(b.key))).toEqual([
      { key: blob(1), size: 5, modifiedMs: 1_000_000 },
      { key: `${layer(1)}/data`, size: 3, modifiedMs: expect.any(Number) },
    ]);
    const underBlobs = [];
    for await (const o of store.list("blobs/")) underBlobs.push(o.key);
    expect(underBlobs).toEqual([blob(1)]);
    expect(await store.uploadsInProgress()).toEqual({ count: 1, bytes: 9 });

    await store.delete(`${layer(1)}/data`);
    await mkdir(join(root, "empty", "nested"), { recursive: true });
    expect(await store.removeEmptyDirectories(true)).toBe(8); // the layer's 6 levels, empty and empty/nested
    expect(await store.removeEmptyDirectories()).toBe(8);
    expect((await readdir(root)).sort()).toEqual([".tmp", "blobs"]);
    expect(await getBytes(store, blob(1))).toEqual(bytes(5));
  });
});
