import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Miniflare } from "miniflare";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { FsStore } from "../../src/store/fs.ts";
import { MemoryStore } from "../../src/store/memory.ts";
import { R2Store, type R2BucketLike } from "../../src/store/r2.ts";
import { assertValidKey, getBytes, putBytes, type ContentStore } from "../../src/store/store.ts";
import { bytesOf, readBody } from "./fakes.ts";

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);

const tempDirs: string[] = [];
afterEach(async () => {
  for (const dir of tempDirs.splice(0)) await rm(dir, { recursive: true, force: true });
});

async function tempRoot(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "skiff-store-"));
  tempDirs.push(dir);
  return dir;
}

interface Backend {
  store: ContentStore;
  /** Files left in the temporary area (FsStore only; always [] for memory and R2). */
  leftovers(): Promise<string[]>;
}

// One local R2 (Miniflare, loopback only) for the file, emptied before each test.
let miniflare: Miniflare | undefined;
afterAll(async () => {
  await miniflare?.dispose();
});

// Miniflare types its bucket with @cloudflare/workers-types, which is not installed: say what is used.
type ListableBucket = R2BucketLike & {
  list(options?: { cursor?: string }): Promise<{ objects: { key: string }[]; truncated: boolean; cursor?: string }>;
};

async function emptyR2Bucket(): Promise<R2BucketLike> {
  miniflare ??= new Miniflare({ modules: true, script: "export default { fetch() { return new Response('') } }", r2Buckets: ["STORE"] });
  const bucket = (await miniflare.getR2Bucket("STORE")) as unknown as ListableBucket;
  for (let listed = await bucket.list(); ; listed = await bucket.list({ cursor: listed.cursor })) {
    const keys = listed.objects.map((o) => o.key);
    if (keys.length > 0) await bucket.delete(keys);
    if (!listed.truncated) break;
  }
  return bucket;
}

const BACKENDS: [string, () => Promise<Backend>][] = [
  ["MemoryStore", async () => ({ store: new MemoryStore(), leftovers: async () => [] })],
  [
    "FsStore",
    async () => {
      const store = await new FsStore(await tempRoot()).init();
      return { store, leftovers: () => readdir(join(store.root, ".tmp")) };
    },
  ],
  // Aborted multipart uploads are checked in r2-store.test.ts, where a spy sees them.
  ["R2Store", async () => ({ store: new R2Store(await emptyR2Bucket()), leftovers: async () => [] })],
];

async function read(store: ContentStore, key: string, span?: { offset: number; length: number }): Promise<string | null> {
  const body = await store.get(key, span);
  if (!body) return null;
  const r = await readBody(body);
  expect(r.clean).toBe(true);
  return dec(r.bytes);
}

describe.each(BACKENDS)("%s contract", (_name, make) => {
  it("keeps a put invisible until commit, then shows exactly the written bytes", async () => {
    const { store } = await make();
    const upload = await store.put("blobs/sha256/ab/abc");
    await upload.write(enc("hello "));
    await upload.write(enc("world"));
    expect(await store.stat("blobs/sha256/ab/abc")).toBeNull();
    expect(await store.get("blobs/sha256/ab/abc")).toBeNull();
    await upload.commit();
    expect(await store.stat("blobs/sha256/ab/abc")).toEqual({ size: 11 });
    expect(await read(store, "blobs/sha256/ab/abc")).toBe("hello world");
  });

  it("keeps the previous object visible while a replacement is being written", async () => {
    const { store } = await make();
    await putBytes(store, "k/v", enc("old"));
    const upload = await store.put("k/v");
    await upload.write(enc("new, longer"));
    expect(await read(store, "k/v")).toBe("old");
    await upload.commit();
    expect(await read(store, "k/v")).toBe("new, longer");
  });

  it("leaves nothing behind when an upload is cancelled, and cancel is idempotent", async () => {
    const backend = await make();
    const { store } = backend;
    const upload = await store.put("a/b/c");
    await upload.write(bytesOf(10_000));
    await upload.cancel();
    await upload.cancel();
    expect(await store.stat("a/b/c")).toBeNull();
    expect(await store.get("a/b/c")).toBeNull();
    expect(await backend.leftovers()).toEqual([]);
    await expect(upload.write(enc("late"))).rejects.toThrow();
    await expect(upload.commit()).rejects.toThrow();
    expect(await store.stat("a/b/c")).toBeNull();
  });

  it("refuses writes and a second commit after commit, and cleans its temporary file", async () => {
    const backend = await make();
    const upload = await backend.store.put("x/y");
    await upload.write(enc("data"));
    await upload.commit();
    await expect(upload.write(enc("more"))).rejects.toThrow();
    await expect(upload.commit()).rejects.toThrow();
    await upload.cancel(); // after commit: must not remove the published object
    expect(await read(backend.store, "x/y")).toBe("data");
    expect(await backend.leftovers()).toEqual([]);
  });

  it("reads a span of an object, clamped at its end", async () => {
    const { store } = await make();
    await putBytes(store, "obj", enc("0123456789"));
    expect(await read(store, "obj", { offset: 2, length: 3 })).toBe("234");
    expect(await read(store, "obj", { offset: 0, length: 10 })).toBe("0123456789");
    expect(await read(store, "obj", { offset: 8, length: 100 })).toBe("89");
    expect(await read(store, "obj", { offset: 9, length: 1 })).toBe("9");
  });

  it("answers a span at or past the end, or of no bytes, with no bytes; a span of a missing key with null", async () => {
    const { store } = await make();
    await putBytes(store, "obj", enc("0123456789"));
    expect(await read(store, "obj", { offset: 10, length: 5 })).toBe("");
    expect(await read(store, "obj", { offset: 50, length: 5 })).toBe("");
    expect(await read(store, "obj", { offset: 3, length: 0 })).toBe("");
    await putBytes(store, "none", new Uint8Array(0));
    expect(await read(store, "none", { offset: 0, length: 5 })).toBe("");
    expect(await store.get("missing", { offset: 0, length: 5 })).toBeNull();
    expect(await store.get("missing", { offset: 50, length: 5 })).toBeNull();
    expect(await store.get("missing", { offset: 0, length: 0 })).toBeNull();
  });

  it("reads large objects whole and by spans that cross internal read boundaries", async () => {
    const { store } = await make();
    const data = bytesOf(700_001, 3);
    await putBytes(store, "big/one", data);
    expect((await store.stat("big/one"))?.size).toBe(data.byteLength);
    const whole = await readBody(await store.get("big/one"));
    expect(whole.clean).toBe(true);
    expect(Buffer.from(whole.bytes).equals(Buffer.from(data))).toBe(true);
    const span = await readBody(await store.get("big/one", { offset: 262_000, length: 300_000 }));
    expect(Buffer.from(span.bytes).equals(Buffer.from(data.subarray(262_000, 562_000)))).toBe(true);
  });

  it("stores an empty object", async () => {
    const { store } = await make();
    const upload = await store.put("empty");
    await upload.commit();
    expect(await store.stat("empty")).toEqual({ size: 0 });
    expect(await read(store, "empty")).toBe("");
  });

  it("deletes objects; deleting an absent key is not an error", async () => {
    const { store } = await make();
    await putBytes(store, "d/e", enc("x"));
    await putBytes(store, "d/f", enc("y"));
    await store.delete("d/e");
    expect(await store.stat("d/e")).toBeNull();
    expect(await store.get("d/e")).toBeNull();
    expect(await read(store, "d/f")).toBe("y");
    await expect(store.delete("d/never")).resolves.toBeUndefined();
    expect(await store.stat("nope/nothing")).toBeNull();
  });

  it("does not mistake a key prefix (a directory on disk) for an object", async () => {
    const { store } = await make();
    await putBytes(store, "p/q/r", enc("deep"));
    expect(await store.stat("p/q")).toBeNull();
    expect(await getBytes(store, "p/q/r")).toEqual(enc("deep"));
  });

  it("rejects keys that could escape or alias (traversal, empty segments, empty key)", async () => {
    const { store } = await make();
    const bad = ["../x", "a/../../x", "a//b", "", "/abs", "a/", "./a", "a/./b", ".hidden", "a b", "a\\b", "x".repeat(1025)];
    for (const key of bad) {
      await expect(store.put(key), `put ${JSON.stringify(key.slice(0, 20))}`).rejects.toThrow(/invalid store key/);
      await expect(store.stat(key), `stat ${JSON.stringify(key.slice(0, 20))}`).rejects.toThrow(/invalid store key/);
      await expect(store.get(key), `get ${JSON.stringify(key.slice(0, 20))}`).rejects.toThrow(/invalid store key/);
      await expect(store.delete(key), `delete ${JSON.stringify(key.slice(0, 20))}`).rejects.toThrow(/invalid store key/);
    }
    expect(() => assertValidKey("repositories/a/b/_blobs/sha256/00ff")).not.toThrow();
  });
});

// Stores shared by several processes offer compare-and-swap, which conversion leases rely on.
describe.each(BACKENDS.filter(([name]) => name !== "FsStore"))("%s compare-and-swap", (_name, make) => {
  it("creates only when absent, replaces only the version it names, and sees plain writes as new versions", async () => {
    const { store } = await make();
    const first = await store.putIfVersion!("locks/a", enc("one"), null);
    expect(first).toEqual(expect.any(String));
    expect(await store.putIfVersion!("locks/a", enc("again"), null)).toBeNull();
    const got = await store.getVersioned!("locks/a");
    expect(got && dec(got.bytes)).toBe("one");
    expect(got?.version).toBe(first);

    const second = await store.putIfVersion!("locks/a", enc("two"), first);
    expect(second).toEqual(expect.any(String));
    expect(second).not.toBe(first);
    expect(await store.putIfVersion!("locks/a", enc("stale"), first)).toBeNull();
    expect(await read(store, "locks/a")).toBe("two");

    await putBytes(store, "locks/a", enc("three"));
    expect(await store.putIfVersion!("locks/a", enc("stale"), second)).toBeNull();
    await store.delete("locks/a");
    expect(await store.getVersioned!("locks/a")).toBeNull();
    expect(await store.putIfVersion!("locks/a", enc("four"), null)).toEqual(expect.any(String));
  });

  it("lets exactly one of many racing creators win", async () => {
    const { store } = await make();
    const results = await Promise.all(Array.from({ length: 8 }, (_, i) => store.putIfVersion!("locks/b", enc(`w${i}`), null)));
    expect(results.filter((r) => r !== null)).toHaveLength(1);
  });
});

describe("FsStore on disk", () => {
  it("writes the object under root/key and only there", async () => {
    const root = await tempRoot();
    const store = await new FsStore(root).init();
    await putBytes(store, "blobs/sha256/aa/aabb", enc("on disk"));
    expect(await readFile(join(root, "blobs/sha256/aa/aabb"), "utf8")).toBe("on disk");
    expect(await readdir(join(root, ".tmp"))).toEqual([]);
  });

  it("commits a large upload flushed to disk along the way, every byte in place", async () => {
    const root = await tempRoot();
    const store = await new FsStore(root).init();
    const upload = await store.put("large/object");
    // 150 MiB in 1 MiB pieces, each filled with its index: two flushes start before the commit.
    const piece = new Uint8Array(2 ** 20);
    for (let i = 0; i < 150; i++) await upload.write(piece.fill(i));
    await upload.commit();
    const bytes = await readFile(join(root, "large/object"));
    expect(bytes.byteLength).toBe(150 * 2 ** 20);
    for (let i = 0; i < 150; i++) expect([bytes[i * 2 ** 20], bytes[(i + 1) * 2 ** 20 - 1]]).toEqual([i, i]);
    expect(await readdir(join(root, ".tmp"))).toEqual([]);
  });

  it("init clears temporaries left by a crash but keeps committed objects", async () => {
    const root = await tempRoot();
    const first = await new FsStore(root).init();
    await putBytes(first, "kept/object", enc("committed"));
    const crashed = await first.put("half/written");
    await crashed.write(enc("partial"));
    await writeFile(join(root, ".tmp", "leftover-from-crash"), "junk");
    await mkdir(join(root, ".tmp", "nested-dir"));
    expect((await readdir(join(root, ".tmp"))).length).toBe(3);

    const second = await new FsStore(root).init();
    expect(await readdir(join(root, ".tmp"))).toEqual([]);
    expect(await second.stat("half/written")).toBeNull();
    expect(await read(second, "kept/object")).toBe("committed");
  });

  it("reads spans at once (readSpan) as get does, and never from a handle on a replaced or deleted object", async () => {
    const store = await new FsStore(await tempRoot()).init();
    await putBytes(store, "obj/a", enc("0123456789"));
    expect(dec((await store.readSpan("obj/a", { offset: 2, length: 3 }))!)).toBe("234");
    expect(dec((await store.readSpan("obj/a", { offset: 8, length: 100 }))!)).toBe("89");
    expect((await store.readSpan("obj/a", { offset: 20, length: 5 }))!.byteLength).toBe(0);
    expect(await store.readSpan("obj/missing", { offset: 0, length: 1 })).toBeNull();
    // A reader mid-stream keeps its bytes while the object is replaced under it.
    const reading = (await store.get("obj/a"))!.getReader();
    await putBytes(store, "obj/a", enc("replaced!"));
    expect(dec((await store.readSpan("obj/a", { offset: 0, length: 100 }))!)).toBe("replaced!");
    expect(await read(store, "obj/a")).toBe("replaced!");
    expect(dec((await reading.read()).value!)).toBe("0123456789");
    await reading.cancel();
    await store.delete("obj/a");
    expect(await store.readSpan("obj/a", { offset: 0, length: 1 })).toBeNull();
    expect(await store.get("obj/a")).toBeNull();
  });

  it("lets two uploads of one key race; the last commit wins and no temporary remains", async () => {
    const store = await new FsStore(await tempRoot()).init();
    const a = await store.put("race/key");
    const b = await store.put("race/key");
    await a.write(enc("first"));
    await b.write(enc("second"));
    await a.commit();
    await b.commit();
    expect(await read(store, "race/key")).toBe("second");
    expect(await readdir(join(store.root, ".tmp"))).toEqual([]);
  });
});

describe("MemoryStore", () => {
  it("lists committed keys only", async () => {
    const store = new MemoryStore();
    await putBytes(store, "one", enc("1"));
    const pending = await store.put("two");
    await pending.write(enc("2"));
    expect(store.keys()).toEqual(["one"]);
    expect(store.size).toBe(1);
    await pending.cancel();
    expect(store.keys()).toEqual(["one"]);
  });

  it("hands out copies, so a reader cannot corrupt the stored object", async () => {
    const store = new MemoryStore();
    const source = enc("abc");
    await putBytes(store, "obj", source);
    source[0] = 0x7a; // caller mutates its buffer after the put
    const r = await readBody(await store.get("obj"));
    r.bytes[1] = 0x7a; // reader mutates what it received
    expect(await read(store, "obj")).toBe("abc");
  });
});
