import { createHash, randomBytes } from "node:crypto";
import zlib from "node:zlib";
import { describe, expect, it } from "vitest";
import { CHUNK_CODECS, codecFromId, codecId, decodeChunk, encodeChunk, fflateInflateRaw, type ChunkCodec } from "../../src/format/codec.ts";
import { zlibInflateRaw } from "../../node-agent/src/zlib-inflate.ts";

const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

/** A fixed input mixing text, small-integer tables and pseudo-random bytes (xorshift, seed 1). */
function fixedInput(size: number): Uint8Array {
  const out = new Uint8Array(size);
  const text = new TextEncoder().encode("usr/share/doc/libc6/copyright: GNU Lesser General Public License\n");
  let x = 1;
  for (let i = 0; i < size; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    const region = (i >> 12) % 3;
    out[i] = region === 0 ? text[i % text.length]! : region === 1 ? (i >> 2) & 0x3f : x & 0xff;
  }
  return out;
}

describe("codec ids", () => {
  it("round-trips every codec through its id and refuses unknown ids", () => {
    expect(CHUNK_CODECS).toEqual(["none", "deflate-raw"]);
    expect(codecId("none")).toBe(0);
    expect(codecId("deflate-raw")).toBe(1);
    for (const c of CHUNK_CODECS) expect(codecFromId(codecId(c))).toBe(c);
    for (const id of [2, 255, -1, 0.5]) expect(codecFromId(id)).toBeNull();
  });
});

describe.each([
  ["fflate", fflateInflateRaw],
  ["node:zlib (the agent's)", zlibInflateRaw],
] as const)("encodeChunk / decodeChunk with %s inflating", (_inflater, inflate) => {
  const samples: [string, Uint8Array][] = [
    ["empty", new Uint8Array(0)],
    ["one byte", new Uint8Array([42])],
    ["text", new TextEncoder().encode("hello chunk ".repeat(1000))],
    ["64 KiB mixed", fixedInput(64 * 1024)],
    ["1 MiB mixed", fixedInput(1024 * 1024)],
    ["1 MiB incompressible", new Uint8Array(randomBytes(1024 * 1024))],
    ["16 MiB zeros (largest chunk)", new Uint8Array(16 * 1024 * 1024)],
  ];

  it.each(CHUNK_CODECS.flatMap((codec) => samples.map(([name, data]) => [codec, name, data] as const)))(
    "%s round-trips %s",
    async (codec: ChunkCodec, _name, data) => {
      const stored = encodeChunk(codec, data);
      const decoded = await decodeChunk(codec, stored, data.length, inflate);
      expect(decoded.length).toBe(data.length);
      expect(sha256(decoded)).toBe(sha256(data));
    },
  );

  it("stores deflate-raw that any inflater reads, and reads deflate-raw from any deflater", async () => {
    const data = fixedInput(300_000);
    expect(sha256(zlib.inflateRawSync(encodeChunk("deflate-raw", data)))).toBe(sha256(data));
    for (const level of [0, 9]) {
      const foreign = new Uint8Array(zlib.deflateRawSync(data, { level }));
      expect(sha256(await decodeChunk("deflate-raw", foreign, data.length, inflate))).toBe(sha256(data));
    }
  });

  it("encodes deterministically: the same bytes every time and on every runtime", () => {
    const data = fixedInput(1024 * 1024);
    const a = encodeChunk("deflate-raw", data);
    const b = encodeChunk("deflate-raw", data.slice());
    expect(sha256(b)).toBe(sha256(a));
    // Pinned: a different fflate version or level (or a platform zlib) would change converted blobs.
    expect(sha256(fixedInput(1024 * 1024))).toBe("ffb84d61d4d3ed72fa4c61c4088dbc56381f7751837a98a46cc37dab508731de");
    expect({ length: a.length, sha256: sha256(a) }).toEqual({
      length: 355638,
      sha256: "b43c3a13112d3d836b6bbe619aef45aeed83b95ecede02e73039ce81f8b0a625",
    });
  });

  it("returns the input itself for none", () => {
    const data = fixedInput(100);
    expect(encodeChunk("none", data)).toBe(data);
  });

  it("rejects a chunk that decodes to a different length than expected", async () => {
    for (const data of [fixedInput(1000), fixedInput(512 * 1024)]) {
      const stored = encodeChunk("deflate-raw", data);
      await expect(decodeChunk("deflate-raw", stored, data.length - 1, inflate)).rejects.toThrow(
        `deflate-raw chunk decodes to more than ${data.length - 1} bytes, expected ${data.length - 1}`,
      );
      await expect(decodeChunk("deflate-raw", stored, data.length + 1, inflate)).rejects.toThrow(
        `deflate-raw chunk decodes to ${data.length} bytes, expected ${data.length + 1}`,
      );
    }
    await expect(decodeChunk("none", fixedInput(10), 11, inflate)).rejects.toThrow("stored chunk is 10 bytes, expected 11");
  });

  it("rejects corrupt and truncated deflate data", async () => {
    for (const size of [1000, 512 * 1024]) {
      const stored = encodeChunk("deflate-raw", fixedInput(size));
      await expect(decodeChunk("deflate-raw", stored.subarray(0, stored.length >> 1), size, inflate)).rejects.toThrow(/^deflate-raw chunk/);
      await expect(decodeChunk("deflate-raw", new Uint8Array([0xff, 0xff, 0xff, 0xff]), size, inflate)).rejects.toThrow(/^deflate-raw chunk is corrupt: /);
    }
  });

  it("refuses an expected size outside 0..16 MiB before allocating", async () => {
    for (const size of [-1, 1.5, 16 * 1024 * 1024 + 1, Number.MAX_SAFE_INTEGER]) {
      await expect(decodeChunk("deflate-raw", new Uint8Array([3, 0]), size, inflate)).rejects.toThrow(RangeError);
    }
  });
});
