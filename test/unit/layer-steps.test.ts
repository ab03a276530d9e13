// A layer converted in resumable steps (a small budget forces many) must give exactly the bytes of
// one pass: the same bootstrap, the same data blob, nothing else left in the store.
import { gzipSync } from "node:zlib";
import { describe, expect, it } from "vitest";
import { CheckpointError, decodeCheckpoint, encodeCheckpoint } from "../../src/convert/checkpoint.ts";
import { ConversionPaused, convertLayer, LayerDigestError, type ConvertLayerOptions, type LayerSource } from "../../src/convert/layer.ts";
import { paramsId, type ConvertParams } from "../../src/format/params.ts";
import { ChunkTable } from "../../src/format/tree-table.ts";
import { layerBootstrapKey, layerCheckpointKey, layerDataKey } from "../../src/store/keys.ts";
import { nodeHasher } from "../../src/hash/node.ts";
import { LayerFormatError } from "../../src/convert/decompress.ts";
import { parseDigest } from "../../src/oci/reference.ts";
import { MemoryStore } from "../../src/store/memory.ts";
import { getBytes, putBytes, type ContentStore, type Upload } from "../../src/store/store.ts";
import { Prng, sha256, tarArchive, type TarEntry } from "../e2e/harness/images.ts";

const KiB = 1024;
const CHUNK = 64 * KiB;
const GZIP = "application/vnd.oci.image.layer.v1.tar+gzip";

/** Files of many sizes, whole chunks repeated inside and across files, and empty files. */
function layerBytes(seed: string): Uint8Array {
  const prng = new Prng(seed);
  const shared = prng.bytes(3 * CHUNK);
  const entries: TarEntry[] = [{ name: "d", type: "dir" }];
  for (let i = 0; i < 24; i++) {
    const size = [0, 100, CHUNK - 1, CHUNK, CHUNK + 1, 5 * CHUNK + 7][i % 6]!;
    entries.push({ name: `d/f${i}`, type: "file", data: prng.bytes(size) });
    if (i % 5 === 0) entries.push({ name: `d/copy${i}`, type: "file", data: Buffer.concat([shared, prng.bytes(i * 37)]) });
  }
  entries.push({ name: "tail", type: "file", data: Buffer.concat([shared, shared]) });
  return gzipSync(tarArchive(entries));
}

function source(bytes: Uint8Array, digest = sha256(bytes)): LayerSource {
  return {
    digest: parseDigest(digest)!,
    mediaType: GZIP,
    size: bytes.byteLength,
    open: async () =>
      new ReadableStream({
        // In pieces, as a network body comes.
        start(controller) {
          for (let at = 0; at < bytes.byteLength; at += 10_000) controller.enqueue(bytes.slice(at, at + 10_000));
          controller.close();
        },
      }),
  };
}

/** Converts step after step with a fresh budget each time; returns how many steps it took. */
async function convertInSteps(layer: LayerSource, opts: Omit<ConvertLayerOptions, "budget">, stepBytes: number): Promise<number> {
  for (let step = 1; step <= 1000; step++) {
    try {
      await convertLayer(layer, { ...opts, budget: { remaining: stepBytes } });
      return step;
    } catch (err) {
      if (!(err instanceof ConversionPaused)) throw err;
    }
  }
  throw new Error("conversion did not finish in 1000 steps");
}

async function published(store: MemoryStore, layer: LayerSource, params: ConvertParams) {
  const id = paramsId(params);
  return { bootstrap: await getBytes(store, layerBootstrapKey(layer.digest, id)), data: await getBytes(store, layerDataKey(layer.digest, id)) };
}

describe("conversion in resumable steps", () => {
  const bytes = layerBytes("steps");
  const layer = source(bytes);

  for (const params of [
    { chunkShift: 16, codec: "none" },
    { chunkShift: 16, codec: "deflate-raw" },
    { chunkShift: 20, codec: "none" },
  ] satisfies ConvertParams[]) {
    it(`gives the same bootstrap and data as one pass (${paramsId(params)})`, async () => {
      const once = new MemoryStore();
      await convertLayer(layer, { store: once, hasher: nodeHasher, params });
      const expected = await published(once, layer, params);
      expect(expected.bootstrap).not.toBeNull();

      const stepped = new MemoryStore();
      const steps = await convertInSteps(layer, { store: stepped, hasher: nodeHasher, params }, 2 * CHUNK);
      expect(steps).toBeGreaterThan(params.chunkShift === 16 ? 10 : 2);
      const got = await published(stepped, layer, params);
      expect(Buffer.from(got.bootstrap!).equals(Buffer.from(expected.bootstrap!))).toBe(true);
      expect(Buffer.from(got.data!).equals(Buffer.from(expected.data!))).toBe(true);
      // Checkpoint, segments and lease are gone: only what one pass leaves.
      expect(stepped.keys().sort()).toEqual(once.keys().sort());
    });
  }

  it("a budget larger than the layer converts in one step without a checkpoint", async () => {
    const store = new MemoryStore();
    const params: ConvertParams = { chunkShift: 16, codec: "none" };
    expect(await convertInSteps(layer, { store, hasher: nodeHasher, params }, 1 << 30)).toBe(1);
    expect(store.keys()).toHaveLength(2);
  });

  it("every step makes progress, however small the budget", async () => {
    const store = new MemoryStore();
    const params: ConvertParams = { chunkShift: 20, codec: "none" };
    const steps = await convertInSteps(layer, { store, hasher: nodeHasher, params }, 1);
    const once = new MemoryStore();
    await convertLayer(layer, { store: once, hasher: nodeHasher, params });
    const chunks = (await import("../../src/format/decode.ts")).Bootstrap.decode((await published(once, layer, params)).bootstrap!).chunkCount;
    // One new chunk per step (duplicates included), and one more to find the end.
    expect(steps).toBeGreaterThan(chunks);
    expect(Buffer.from((await published(store, layer, params)).data!).equals(Buffer.from((await published(once, layer, params)).data!))).toBe(true);
  });

  it("a layer whose bytes do not match its digest publishes nothing, even after steps", async () => {
    const store = new MemoryStore();
    const params: ConvertParams = { chunkShift: 16, codec: "none" };
    const lying = source(bytes, sha256(new Uint8Array([1])));
    await expect(convertInSteps(lying, { store, hasher: nodeHasher, params }, 4 * CHUNK)).rejects.toThrow(LayerDigestError);
    // Steps over the wrong bytes are not kept to resume from.
    expect(store.keys()).toEqual([]);
  });

  it("a source that checks the digest itself (checked) is not hashed again; one that does not is", async () => {
    const params: ConvertParams = { chunkShift: 16, codec: "none" };
    const vouched = { ...source(bytes, sha256(new Uint8Array([1]))), checked: true };
    await expect(convertLayer(vouched, { store: new MemoryStore(), hasher: nodeHasher, params })).resolves.toMatchObject({ converted: true });
    await expect(convertLayer({ ...vouched, checked: false }, { store: new MemoryStore(), hasher: nodeHasher, params })).rejects.toThrow(LayerDigestError);
  });

  it("a decompression bomb is refused once it expands past the limit, in one pass or in steps, and publishes nothing", async () => {
    // 8 MiB of zeros in one file: about 8 KiB of gzip.
    const bomb = source(gzipSync(tarArchive([{ name: "zeros", type: "file", data: new Uint8Array(8 * 2 ** 20) }])));
    expect(bomb.size).toBeLessThan(64 * KiB);
    const params: ConvertParams = { chunkShift: 16, codec: "none" };
    for (const stepBytes of [undefined, 512 * KiB]) {
      const store = new MemoryStore();
      const opts = { store, hasher: nodeHasher, params, maxExpandedBytes: 2 * 2 ** 20 };
      const converting = stepBytes === undefined ? convertLayer(bomb, opts) : convertInSteps(bomb, opts, stepBytes);
      await expect(converting).rejects.toThrow(/expands past 2097152 bytes/);
      await expect(converting).rejects.toBeInstanceOf(LayerFormatError);
      // Nothing is left, in one pass or in steps: the earlier steps' checkpoint and segments go too.
      expect(store.keys()).toEqual([]);
    }
    // Under the limit the same layer converts.
    const converted = await convertLayer(bomb, { store: new MemoryStore(), hasher: nodeHasher, params, maxExpandedBytes: 16 * 2 ** 20 });
    expect(converted.bootstrap.chunkCount).toBe(1);
  });

  it("a layer with more entries than the limit is refused and publishes nothing, in one pass or in steps", async () => {
    const entries = Array.from({ length: 50 }, (_, i) => ({ name: `f${i}`, type: "file" as const, data: new Uint8Array(i) }));
    const many = source(gzipSync(tarArchive(entries)));
    const params: ConvertParams = { chunkShift: 16, codec: "none" };
    for (const stepBytes of [undefined, 256]) {
      const store = new MemoryStore();
      const opts = { store, hasher: nodeHasher, params, maxEntries: 49 };
      const converting = stepBytes === undefined ? convertLayer(many, opts) : convertInSteps(many, opts, stepBytes);
      await expect(converting).rejects.toThrow(/has more than 49 entries/);
      await expect(converting).rejects.toBeInstanceOf(LayerFormatError);
      expect(store.keys()).toEqual([]);
    }
    const converted = await convertLayer(many, { store: new MemoryStore(), hasher: nodeHasher, params, maxEntries: 50 });
    expect(converted.stats?.entries).toBe(50);
  });

  it("a damaged checkpoint is dropped and the conversion starts over to the same result", async () => {
    const params: ConvertParams = { chunkShift: 16, codec: "none" };
    const id = paramsId(params);
    const store = new MemoryStore();
    const opts = { store, hasher: nodeHasher, params };
    for (let i = 0; i < 3; i++) await expect(convertLayer(layer, { ...opts, budget: { remaining: 2 * CHUNK } })).rejects.toThrow(ConversionPaused);
    const key = layerCheckpointKey(layer.digest, id);
    const bytes = (await getBytes(store, key))!;
    const cp = decodeCheckpoint(bytes);
    // Claims a chunk size the layer does not have: the replay notices.
    editRecord(bytes, 0, 44, "u32", (v) => v - 1);
    for (let i = 1; i < cp.chunks.count; i++) editRecord(bytes, i, 48, "f64", (v) => v - 1);
    expect(decodeCheckpoint(bytes).chunks.size(0)).toBe(cp.chunks.size(0) - 1);
    await putBytes(store, key, bytes);
    await expect(convertLayer(layer, { ...opts, budget: { remaining: 2 * CHUNK } })).rejects.toThrow(CheckpointError);
    expect(await getBytes(store, key)).toBeNull();
    await convertInSteps(layer, opts, 2 * CHUNK);

    const once = new MemoryStore();
    await convertLayer(layer, { store: once, hasher: nodeHasher, params });
    expect(Buffer.from((await published(store, layer, params)).data!).equals(Buffer.from((await published(once, layer, params)).data!))).toBe(true);
  });

  it("an unreadable checkpoint is ignored", async () => {
    const params: ConvertParams = { chunkShift: 16, codec: "none" };
    const store = new MemoryStore();
    await putBytes(store, layerCheckpointKey(layer.digest, paramsId(params)), new TextEncoder().encode("not a checkpoint"));
    await convertInSteps(layer, { store, hasher: nodeHasher, params }, 8 * CHUNK);
    expect(await getBytes(store, layerCheckpointKey(layer.digest, paramsId(params)))).toBeNull();
    expect((await published(store, layer, params)).bootstrap).not.toBeNull();
  });
});

/** The process stopped (SIGKILL, or a shutdown's exit): nothing more reaches the store, not even a cleanup. */
class Stopped extends Error {}

/**
 * `inner` as a process sees it that stops at its `stopAt`-th change to the store (a commit or a
 * delete), before that change is made. `changes` counts them.
 */
function stoppingStore(inner: MemoryStore, stopAt: number): ContentStore & { changes: number } {
  let stopped = false;
  const change = () => {
    if (stopped || ++store.changes >= stopAt) {
      stopped = true;
      throw new Stopped();
    }
  };
  const alive = () => {
    if (stopped) throw new Stopped();
  };
  const store = {
    changes: 0,
    stat: async (key: string) => (alive(), inner.stat(key)),
    get: async (key: string, span?: { offset: number; length: number }) => (alive(), inner.get(key, span)),
    delete: async (key: string) => (change(), inner.delete(key)),
    put: async (key: string): Promise<Upload> => {
      alive();
      const upload = await inner.put(key);
      return {
        write: async (chunk) => (alive(), upload.write(chunk)),
        commit: async () => (change(), upload.commit()),
        cancel: async () => (alive(), upload.cancel()),
      };
    },
  };
  return store;
}

describe("a conversion stopped at any point", () => {
  const bytes = layerBytes("stopped");
  const layer = source(bytes);
  const params: ConvertParams = { chunkShift: 16, codec: "none" };

  for (const [how, budget] of [
    ["in one pass", undefined],
    ["in steps", 8 * CHUNK],
  ] as const) {
    it(`publishes nothing half-made, and the next process finishes it to the one-pass result (${how})`, async () => {
      const once = new MemoryStore();
      await convertLayer(layer, { store: once, hasher: nodeHasher, params });
      const expected = await published(once, layer, params);
      const convert = (store: ContentStore) => (budget === undefined ? convertLayer(layer, { store, hasher: nodeHasher, params }) : convertInSteps(layer, { store, hasher: nodeHasher, params }, budget));

      // How many changes a whole conversion makes: it is stopped before each of them in turn.
      const counting = stoppingStore(new MemoryStore(), Infinity);
      await convert(counting);
      expect(counting.changes).toBeGreaterThan(budget === undefined ? 1 : 8);
      for (let stopAt = 1; stopAt <= counting.changes; stopAt++) {
        const store = new MemoryStore();
        await expect(convert(stoppingStore(store, stopAt))).rejects.toThrow(Stopped);
        const left = await published(store, layer, params);
        // A bootstrap is what readers look for: there is none, or it is whole and its data is too.
        if (left.bootstrap) {
          expect(Buffer.from(left.bootstrap).equals(Buffer.from(expected.bootstrap!)), `stopped at change ${stopAt}`).toBe(true);
          expect(Buffer.from(left.data!).equals(Buffer.from(expected.data!)), `stopped at change ${stopAt}`).toBe(true);
        }
        await convert(store);
        const got = await published(store, layer, params);
        expect(Buffer.from(got.bootstrap!).equals(Buffer.from(expected.bootstrap!)), `stopped at change ${stopAt}`).toBe(true);
        expect(Buffer.from(got.data!).equals(Buffer.from(expected.data!)), `stopped at change ${stopAt}`).toBe(true);
        expect(store.keys().sort(), `stopped at change ${stopAt}`).toEqual(once.keys().sort());
      }
    });
  }
});

describe("checkpoint encoding", () => {
  const record = (i: number, size = 10) => ({ digest: new Uint8Array(32).fill(i), blob: 0, compressed: i % 2 === 1, storedOffset: i * 8, storedSize: 8, size, uncompressedOffset: i * size });
  const records = [record(0), record(1)];
  const chunks = new ChunkTable();
  for (const r of records) chunks.add(r);
  const valid = { layer: `sha256:${"a".repeat(64)}`, params: "v1-c16-none", chunks, ordinals: Uint32Array.from([0, 0, 1, 0]), segments: [{ from: 0, size: 10 }, { from: 2, size: 6 }] };

  it("round-trips", () => {
    const back = decodeCheckpoint(encodeCheckpoint(valid));
    expect(back.layer).toBe(valid.layer);
    expect(back.params).toBe(valid.params);
    expect(back.chunks.records()).toEqual(records);
    expect([...back.ordinals]).toEqual([...valid.ordinals]);
    expect(back.segments).toEqual(valid.segments);
  });

  it.each([
    ["bad magic", (b: Uint8Array) => (b[0] = 0)],
    ["truncated", (b: Uint8Array) => b.subarray(0, b.length - 1)],
    ["ordinal naming a record before it exists", () => encodeCheckpoint({ ...valid, ordinals: Uint32Array.from([1, 0]) })],
    ["a record no chunk uses", () => encodeCheckpoint({ ...valid, ordinals: Uint32Array.from([0, 0]) })],
    ["segments not adding up", () => encodeCheckpoint({ ...valid, segments: [{ from: 0, size: 10 }] })],
    ["segments out of order", () => encodeCheckpoint({ ...valid, segments: [{ from: 0, size: 10 }, { from: 0, size: 6 }] })],
    ["records out of place", (b: Uint8Array) => editRecord(b, 1, 32, "f64", () => 9)],
    ["a record twice", (b: Uint8Array) => b.copyWithin(recordAt(b, 1), recordAt(b, 0), recordAt(b, 0) + 32)],
  ])("refuses %s", (_, damage) => {
    let bytes = encodeCheckpoint(valid);
    const changed = damage(bytes);
    if (changed instanceof Uint8Array) bytes = changed;
    expect(() => decodeCheckpoint(bytes)).toThrow(CheckpointError);
  });
});

/** Where record `i` of an encoded checkpoint starts. */
function recordAt(bytes: Uint8Array, i: number): number {
  return 12 + new DataView(bytes.buffer, bytes.byteOffset).getUint32(8, true) + i * 64;
}

/** Changes one field of record `i` in an encoded checkpoint, in place. */
function editRecord(bytes: Uint8Array, i: number, field: number, type: "u32" | "f64", change: (v: number) => number): Uint8Array {
  const view = new DataView(bytes.buffer, bytes.byteOffset);
  const at = recordAt(bytes, i) + field;
  if (type === "u32") view.setUint32(at, change(view.getUint32(at, true)), true);
  else view.setFloat64(at, change(view.getFloat64(at, true)), true);
  return bytes;
}
