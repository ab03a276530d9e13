// R2Store against Miniflare's local R2 (workerd on loopback, the same R2 code path as `wrangler dev`),
// through a spy that records what reaches the bucket: single puts, parts and their sizes, complete
// and abort. The shared store contract runs against R2 in store.test.ts.
import { Miniflare } from "miniflare";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  MIN_PART_SIZE,
  R2Store,
  type R2BucketLike,
  type R2MultipartUploadLike,
} from "../../src/store/r2.ts";
import { putBytes, type Upload } from "../../src/store/store.ts";
import { bytesOf, readBody } from "./fakes.ts";

const MiB = 2 ** 20;
const PART = MIN_PART_SIZE; // the smallest part R2 accepts, so the tests move as little data as they can

const enc = (s: string) => new TextEncoder().encode(s);
const same = (a: Uint8Array, b: Uint8Array) => Buffer.from(a).equals(Buffer.from(b));

let miniflare: Miniflare;
let local: R2BucketLike;

beforeAll(async () => {
  miniflare = new Miniflare({ modules: true, script: "export default { fetch() { return new Response('') } }", r2Buckets: ["STORE"] });
  // Miniflare types its bucket with @cloudflare/workers-types, which is not installed.
  local = (await miniflare.getR2Bucket("STORE")) as unknown as R2BucketLike;
});

afterAll(async () => {
  await miniflare?.dispose();
});

// One bucket for the file: every test writes under keys of its own.
let keys = 0;
const freshKey = () => `t/k${++keys}`;

interface MultipartRecord {
  key: string;
  numbers: number[];
  sizes: number[];
  completed: boolean;
  aborts: number;
  /** The bucket's own upload, to ask R2 whether it still exists. */
  real: R2MultipartUploadLike;
}

interface Spy {
  bucket: R2BucketLike;
  /** Byte length of every single put. */
  puts: number[];
  uploads: MultipartRecord[];
  /** Bytes handed to uploadPart so far, whether or not the part has landed. */
  sent: number;
  inFlight: number;
  maxInFlight: number;
  fail: { part?: number; complete?: boolean };
}

function spyOn(real: R2BucketLike): Spy {
  const spy: Spy = { bucket: real, puts: [], uploads: [], sent: 0, inFlight: 0, maxInFlight: 0, fail: {} };
  spy.bucket = {
    head: (key) => real.head(key),
    get: (key, options) => real.get(key, options),
    delete: (k) => real.delete(k),
    list: (o) => real.list(o),
    put: (key, value) => {
      spy.puts.push(value.byteLength);
      return real.put(key, value);
    },
    createMultipartUpload: async (key) => {
      const mp = await real.createMultipartUpload(key);
      const record: MultipartRecord = { key, numbers: [], sizes: [], completed: false, aborts: 0, real: mp };
      spy.uploads.push(record);
      return {
        key: mp.key,
        uploadId: mp.uploadId,
        uploadPart: async (partNumber, value) => {
          record.numbers.push(partNumber);
          record.sizes.push(value.byteLength);
          spy.sent += value.byteLength;
          spy.maxInFlight = Math.max(spy.maxInFlight, ++spy.inFlight);
          try {
            if (spy.fail.part === partNumber) throw new Error(`injected failure of part ${partNumber}`);
            // Handed on a moment later, as a network reads a body while it goes: a part the store
            // changed while in flight would come back corrupted.
            await new Promise((resolve) => setTimeout(resolve, 1));
            return await mp.uploadPart(partNumber, value);
          } finally {
            spy.inFlight--;
          }
        },
        complete: async (parts) => {
          if (spy.fail.complete) throw new Error("injected failure of complete");
          const done = await mp.complete(parts);
          record.completed = true;
          return done;
        },
        abort: async () => {
          record.aborts++;
          await mp.abort();
        },
      };
    },
  };
  return spy;
}

/**
 * Writes `data` in chunks of the given sizes through one scratch buffer that is overwritten after
 * every write (as a reader reusing its buffer would), checking after each write that the upload
 * holds no more than one part that has not been handed to R2.
 */
async function writeInChunks(upload: Upload, spy: Spy, data: Uint8Array, sizes: number[]): Promise<void> {
  const scratch = new Uint8Array(Math.max(...sizes));
  let at = 0;
  for (const size of sizes) {
    scratch.set(data.subarray(at, at + size));
    await upload.write(scratch.subarray(0, size));
    scratch.fill(0xee);
    at += size;
    expect(at - spy.sent, `bytes held after ${at} written`).toBeLessThanOrEqual(PART);
  }
  expect(at).toBe(data.byteLength);
}

async function readAllOf(store: R2Store, key: string, span?: { offset: number; length: number }): Promise<Uint8Array | null> {
  const body = await store.get(key, span);
  if (!body) return null;
  const r = await readBody(body);
  expect(r.clean).toBe(true);
  return r.bytes;
}

describe("R2Store multipart uploads", () => {
  it("streams an object written in odd-sized chunks as equal parts, published only by commit", async () => {
    const spy = spyOn(local);
    const store = new R2Store(spy.bucket, { partSize: PART });
    const key = freshKey();
    await putBytes(store, key, enc("old"));
    expect(spy.puts).toEqual([3]);

    const sizes = [1, 3 * MiB, 7 * MiB, 1, 5 * MiB, 2 * MiB + 3];
    const data = bytesOf(sizes.reduce((a, b) => a + b, 0), 7); // 17 MiB + 5
    const upload = await store.put(key);
    await writeInChunks(upload, spy, data, sizes);

    // Parts went up while the bytes came; the last one waits for commit; the old object still shows.
    expect(spy.uploads).toHaveLength(1);
    expect(spy.uploads[0]!.sizes).toEqual([PART, PART, PART]);
    expect(spy.uploads[0]!.completed).toBe(false);
    expect(await store.stat(key)).toEqual({ size: 3 });
    expect(await readAllOf(store, key)).toEqual(enc("old"));

    await upload.commit();
    const record = spy.uploads[0]!;
    expect(record.numbers).toEqual([1, 2, 3, 4]);
    expect(record.sizes).toEqual([PART, PART, PART, 2 * MiB + 5]);
    expect(record.completed).toBe(true);
    expect(record.aborts).toBe(0);
    expect(spy.maxInFlight).toBe(1);
    expect(spy.puts).toEqual([3]); // no single put for the large object

    expect(await store.stat(key)).toEqual({ size: data.byteLength });
    expect(same((await readAllOf(store, key))!, data)).toBe(true);
    // Spans across a part boundary, and at and past the end of a multipart object.
    expect(same((await readAllOf(store, key, { offset: PART - 10, length: 20 }))!, data.subarray(PART - 10, PART + 10))).toBe(true);
    expect(same((await readAllOf(store, key, { offset: 3 * PART - 1, length: 10 * MiB }))!, data.subarray(3 * PART - 1))).toBe(true);
    expect(await readAllOf(store, key, { offset: data.byteLength, length: 1 })).toEqual(new Uint8Array(0));
    expect(await readAllOf(store, key, { offset: data.byteLength + 1, length: 1 })).toEqual(new Uint8Array(0));
  });

  it("splits one large chunk into parts, and ends on an exact part boundary with no empty part", async () => {
    const spy = spyOn(local);
    const store = new R2Store(spy.bucket, { partSize: PART });

    const bigKey = freshKey();
    const big = bytesOf(12 * MiB, 11);
    await putBytes(store, bigKey, big);
    expect(spy.uploads[0]!.sizes).toEqual([PART, PART, 2 * MiB]);

    const evenKey = freshKey();
    const even = bytesOf(2 * PART, 13);
    const upload = await store.put(evenKey);
    await writeInChunks(upload, spy, even, [PART, PART]);
    await upload.commit();
    expect(spy.uploads[1]!.sizes).toEqual([PART, PART]);
    expect(spy.uploads.every((u) => u.completed && u.aborts === 0)).toBe(true);
    expect(spy.puts).toEqual([]);

    expect(same((await readAllOf(store, bigKey))!, big)).toBe(true);
    expect(same((await readAllOf(store, evenKey))!, even)).toBe(true);
  });

  it("writes an object of up to one part with a single put at commit, from a copy of the caller's chunks", async () => {
    const spy = spyOn(local);
    const store = new R2Store(spy.bucket, { partSize: PART });

    const smallKey = freshKey();
    const upload = await store.put(smallKey);
    const chunk = enc("hello ");
    await upload.write(chunk);
    chunk.fill(0x21); // the caller reuses its buffer once the write resolved
    await upload.write(enc("small world"));
    expect(spy.puts).toEqual([]); // nothing reaches R2 before commit
    expect(await store.stat(smallKey)).toBeNull();
    await upload.commit();
    expect(spy.puts).toEqual([17]);
    expect(new TextDecoder().decode((await readAllOf(store, smallKey))!)).toBe("hello small world");

    // Exactly one part is still one put: a full buffer is sent as a part only when more bytes follow.
    const fullKey = freshKey();
    const full = bytesOf(PART, 17);
    const fullUpload = await store.put(fullKey);
    await writeInChunks(fullUpload, spy, full, [MiB, 3 * MiB, MiB]);
    await fullUpload.commit();
    expect(spy.puts).toEqual([17, PART]);
    expect(spy.uploads).toEqual([]);
    expect(same((await readAllOf(store, fullKey))!, full)).toBe(true);
  });

  it("keeps concurrent writes in call order", async () => {
    const store = new R2Store(local, { partSize: PART });
    const key = freshKey();
    const upload = await store.put(key);
    await Promise.all([upload.write(enc("a")), upload.write(enc("b")), upload.write(enc("c"))]);
    await upload.commit();
    expect(new TextDecoder().decode((await readAllOf(store, key))!)).toBe("abc");
  });
});

describe("R2Store listing", () => {
  it("lists the objects under a prefix with their sizes and upload times", async () => {
    const store = new R2Store(local);
    const before = Date.now() - 1000;
    await putBytes(store, "listing/a/one", new Uint8Array(3));
    await putBytes(store, "listing/b/two", new Uint8Array(5));
    await putBytes(store, "elsewhere/three", new Uint8Array(1));
    const listed = [];
    for await (const o of store.list("listing/")) listed.push(o);
    expect(listed.map(({ key, size }) => ({ key, size }))).toEqual([
      { key: "listing/a/one", size: 3 },
      { key: "listing/b/two", size: 5 },
    ]);
    for (const o of listed) expect(o.modifiedMs).toBeGreaterThan(before);
  });

  it("follows the bucket's cursor over pages", async () => {
    const pages = [
      { objects: [{ key: "k1", size: 1, uploaded: new Date(1) }], truncated: true, cursor: "c1" },
      { objects: [{ key: "k2", size: 2, uploaded: new Date(2) }], truncated: false },
    ];
    const asked: (string | undefined)[] = [];
    const bucket = { ...local, list: async (o: { cursor?: string }) => (asked.push(o.cursor), pages[asked.length - 1]!) };
    const keys = [];
    for await (const o of new R2Store(bucket).list()) keys.push(o.key);
    expect(keys).toEqual(["k1", "k2"]);
    expect(asked).toEqual([undefined, "c1"]);
  });
});

describe("R2Store cancel and failures", () => {
  it("aborts the multipart upload on cancel after several parts, leaving nothing at the key", async () => {
    const spy = spyOn(local);
    const store = new R2Store(spy.bucket, { partSize: PART });
    const key = freshKey();
    const upload = await store.put(key);
    await writeInChunks(upload, spy, bytesOf(13 * MiB, 19), Array(13).fill(MiB));
    const record = spy.uploads[0]!;
    expect(record.sizes).toEqual([PART, PART]);

    await upload.cancel();
    await upload.cancel();
    expect(record.aborts).toBe(1);
    expect(record.completed).toBe(false);
    expect(await store.stat(key)).toBeNull();
    expect(await store.get(key)).toBeNull();
    expect(await store.get(key, { offset: 0, length: 10 })).toBeNull();
    // R2 itself has dropped the upload, not just the store's handle on it.
    await expect(record.real.uploadPart(3, new Uint8Array(1))).rejects.toThrow(/does not exist/);
    await expect(upload.write(enc("late"))).rejects.toThrow(/finished/);
    await expect(upload.commit()).rejects.toThrow(/finished/);
    expect(await store.stat(key)).toBeNull();
  });

  it("keeps the previous object when a multipart replacement is cancelled", async () => {
    const spy = spyOn(local);
    const store = new R2Store(spy.bucket, { partSize: PART });
    const key = freshKey();
    await putBytes(store, key, enc("previous"));
    const upload = await store.put(key);
    await writeInChunks(upload, spy, bytesOf(11 * MiB, 23), [4 * MiB, 4 * MiB, 3 * MiB]);
    await upload.cancel();
    expect(spy.uploads[0]!.aborts).toBe(1);
    expect(await readAllOf(store, key)).toEqual(enc("previous"));
  });

  it("refuses writes and a second commit after a multipart commit; cancel then keeps the object", async () => {
    const spy = spyOn(local);
    const store = new R2Store(spy.bucket, { partSize: PART });
    const key = freshKey();
    const data = bytesOf(PART + 1, 29);
    const upload = await store.put(key);
    await writeInChunks(upload, spy, data, [PART, 1]);
    await upload.commit();
    await expect(upload.write(enc("more"))).rejects.toThrow(/finished/);
    await expect(upload.commit()).rejects.toThrow(/finished/);
    await upload.cancel();
    expect(spy.uploads[0]!.aborts).toBe(0);
    expect(spy.uploads[0]!.sizes).toEqual([PART, 1]);
    expect(same((await readAllOf(store, key))!, data)).toBe(true);
  });

  it("fails the upload when a part fails; later writes and commit refuse, and cancel aborts", async () => {
    const spy = spyOn(local);
    spy.fail.part = 2;
    const store = new R2Store(spy.bucket, { partSize: PART });
    const key = freshKey();
    const upload = await store.put(key);
    const data = bytesOf(16 * MiB, 31);
    let failedAt = -1;
    for (let i = 0; i < 16; i++) {
      try {
        await upload.write(data.subarray(i * MiB, (i + 1) * MiB));
      } catch (err) {
        expect((err as Error).message).toMatch(/injected failure of part 2/);
        failedAt = i;
        break;
      }
    }
    // Part 2 goes up when the 11th MiB starts; its failure shows when part 3 is ready to go.
    expect(failedAt).toBe(15);
    await expect(upload.write(enc("x"))).rejects.toThrow(/injected failure of part 2/);
    await expect(upload.commit()).rejects.toThrow(/injected failure of part 2/);
    await upload.cancel();
    const record = spy.uploads[0]!;
    expect(record.numbers).toEqual([1, 2]);
    expect(record.completed).toBe(false);
    expect(record.aborts).toBe(1);
    expect(await store.stat(key)).toBeNull();
  });

  it("aborts when complete fails, and cancel after the failed commit is a no-op", async () => {
    const spy = spyOn(local);
    spy.fail.complete = true;
    const store = new R2Store(spy.bucket, { partSize: PART });
    const key = freshKey();
    const upload = await store.put(key);
    await writeInChunks(upload, spy, bytesOf(6 * MiB, 37), [6 * MiB]);
    await expect(upload.commit()).rejects.toThrow(/injected failure of complete/);
    const record = spy.uploads[0]!;
    expect(record.aborts).toBe(1);
    await upload.cancel();
    await upload.cancel();
    expect(record.aborts).toBe(1);
    await expect(upload.write(enc("x"))).rejects.toThrow(/finished/);
    expect(await store.stat(key)).toBeNull();
    await expect(record.real.uploadPart(3, new Uint8Array(1))).rejects.toThrow(/does not exist/);
  });

  it("refuses a part size R2 would reject", () => {
    for (const partSize of [PART - 1, 5 * 2 ** 30 + 1, PART + 0.5, 0]) {
      expect(() => new R2Store(local, { partSize }), String(partSize)).toThrow(RangeError);
    }
    expect(() => new R2Store(local)).not.toThrow();
  });
});
