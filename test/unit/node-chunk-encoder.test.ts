// Chunks encoded on Node's worker threads must give exactly the bytes of the converter's own
// encoder: the same stored bytes, so the same data blob and bootstrap, in one pass and in resumable
// steps, with several chunks in flight at once.
import { gzipSync } from "node:zlib";
import { describe, expect, it } from "vitest";
import { encodeStored, inlineChunkEncoder, type ChunkEncoder } from "../../src/convert/chunk-encoder.ts";
import { ConversionPaused, convertLayer, type ConvertLayerOptions, type LayerSource } from "../../src/convert/layer.ts";
import { CHUNK_CODECS } from "../../src/format/codec.ts";
import { paramsId, type ConvertParams } from "../../src/format/params.ts";
import { nodeHasher } from "../../src/hash/node.ts";
import { parseDigest } from "../../src/oci/reference.ts";
import { nodeChunkEncoder } from "../../src/runtime/node-chunk-encoder.ts";
import { layerBootstrapKey, layerDataKey } from "../../src/store/keys.ts";
import { MemoryStore } from "../../src/store/memory.ts";
import { getBytes } from "../../src/store/store.ts";
import { Prng, sha256, tarArchive, type TarEntry } from "../e2e/harness/images.ts";

const CHUNK = 64 * 1024;

/** Compressible text of `size` bytes. */
function text(seed: number, size: number): Uint8Array {
  let s = "";
  for (let i = seed; s.length < size; i++) s += `line ${i % 97} value=${(i * 7919) % 1000} ${"abcdefgh".repeat(i % 5)}\n`;
  return new TextEncoder().encode(s.slice(0, size));
}

/** Text and random files of many sizes, whole chunks repeated inside and across files. */
function layerBytes(): Uint8Array {
  const prng = new Prng("node-chunk-encoder");
  const shared = text(3, 2 * CHUNK);
  const entries: TarEntry[] = [{ name: "d", type: "dir" }];
  for (let i = 0; i < 30; i++) {
    const size = [0, 100, CHUNK - 1, CHUNK, CHUNK + 1, 5 * CHUNK + 7][i % 6]!;
    entries.push({ name: `d/f${i}`, type: "file", data: i % 2 ? prng.bytes(size) : text(i, size) });
    if (i % 7 === 0) entries.push({ name: `d/copy${i}`, type: "file", data: Buffer.concat([shared, text(i, i * 37)]) });
  }
  return gzipSync(tarArchive(entries));
}

function source(bytes: Uint8Array): LayerSource {
  return {
    digest: parseDigest(sha256(bytes))!,
    mediaType: "application/vnd.oci.image.layer.v1.tar+gzip",
    size: bytes.byteLength,
    open: async () => new ReadableStream({ start: (c) => (c.enqueue(bytes.slice()), c.close()) }),
  };
}

async function convert(layer: LayerSource, params: ConvertParams, chunkEncoder: ChunkEncoder, stepBytes?: number) {
  const store = new MemoryStore();
  const opts: ConvertLayerOptions = { store, hasher: nodeHasher, params, chunkEncoder };
  for (;;) {
    try {
      await convertLayer(layer, { ...opts, budget: stepBytes ? { remaining: stepBytes } : undefined });
      break;
    } catch (err) {
      if (!(err instanceof ConversionPaused)) throw err;
    }
  }
  const id = paramsId(params);
  // Compared by digest: deep equality of megabytes of Uint8Array is slow in the test runner.
  const digest = (bytes: Uint8Array | null) => bytes && sha256(bytes);
  return { bootstrap: digest(await getBytes(store, layerBootstrapKey(layer.digest, id))), data: digest(await getBytes(store, layerDataKey(layer.digest, id))) };
}

describe("node chunk encoder", () => {
  const pool = nodeChunkEncoder(2);

  it.each(CHUNK_CODECS)("encodes as the converter does (%s)", async (codec) => {
    const backing = text(1, 3 * CHUNK);
    const inputs = [text(0, CHUNK), new Prng("x").bytes(CHUNK), new Uint8Array(0), text(2, 10), backing.subarray(100, 100 + CHUNK)];
    for (const data of inputs) {
      const expected = await encodeStored(codec, data);
      const got = await pool.encode(new Uint8Array(data), codec);
      expect(got.compressed).toBe(expected.compressed);
      expect(Buffer.from(got.stored).equals(Buffer.from(expected.stored))).toBe(true);
    }
  });

  it("takes a chunk's whole buffer to its thread and hands it back holding the stored bytes", async () => {
    const buffer = text(1, 3 * CHUNK);
    const expected = await encodeStored("deflate-raw", buffer.subarray(0, CHUNK));
    const got = await pool.encode(buffer.subarray(0, CHUNK), "deflate-raw");
    expect(got.compressed).toBe(true);
    // Moved, not copied: detached here, and back whole with the deflated bytes at the chunk's place,
    // for the converter to cut into again.
    expect(buffer.byteLength).toBe(0);
    expect(got.stored.byteOffset).toBe(0);
    expect(got.stored.buffer.byteLength).toBe(3 * CHUNK);
    expect(Buffer.from(got.stored).equals(Buffer.from(expected.stored))).toBe(true);
    // Stored as it is (incompressible): the chunk's own view, back on this thread.
    const random = new Prng("back").bytes(2 * CHUNK);
    const before = Buffer.from(random.subarray(CHUNK));
    const plain = await pool.encode(random.subarray(CHUNK), "deflate-raw");
    expect(plain.compressed).toBe(false);
    expect(plain.stored.byteOffset).toBe(CHUNK);
    expect(plain.stored.buffer.byteLength).toBe(2 * CHUNK);
    expect(Buffer.from(plain.stored).equals(before)).toBe(true);
  });

  it("rejects an unknown codec", async () => {
    await expect(pool.encode(text(0, 10), "zstd" as never)).rejects.toThrow(/unknown chunk codec/);
  });

  const layer = source(layerBytes());
  for (const codec of CHUNK_CODECS) {
    const params: ConvertParams = { chunkShift: 16, codec };
    it(`converts a layer to the same bytes as the inline encoder (${codec})`, async () => {
      const inline = await convert(layer, params, inlineChunkEncoder);
      expect(inline.bootstrap).not.toBeNull();
      expect(await convert(layer, params, pool)).toEqual(inline);
      // In steps, with chunks in flight when a step's budget runs out.
      expect(await convert(layer, params, pool, 3 * CHUNK + 1)).toEqual(inline);
    });
  }
});
