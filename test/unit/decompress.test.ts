import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import type { Worker as NodeWorker } from "node:worker_threads";
import zlib from "node:zlib";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { nodeGunzip } from "../../src/runtime/node-gunzip.ts";
import { zstdWasmModule } from "../../src/runtime/node-zstd.ts";
import { zlibUnzstd } from "../../src/runtime/zlib-zstd.ts";
import { wasmUnzstd } from "../../src/runtime/zstd-wasm.ts";
import { threadUnzstd } from "../../src/runtime/zstd-thread.ts";
import {
  compressionForMediaType,
  crc32,
  decompressLayer,
  type GunzipFactory,
  LayerFormatError,
  type UnzstdFactory,
  sniffCompression,
  ZstdFrameWalker,
  type ZstdPushDecoder,
} from "../../src/convert/decompress.ts";

// Every worker thread the code under test starts, kept so that a test can end one (the zstd worker
// dying mid-layer). The workers are the real ones.
const started: NodeWorker[] = [];
vi.mock("node:worker_threads", async (original) => {
  const real = await original<typeof import("node:worker_threads")>();
  class KeptWorker extends real.Worker {
    constructor(...args: ConstructorParameters<typeof real.Worker>) {
      super(...args);
      started.push(this);
    }
  }
  return { ...real, Worker: KeptWorker };
});

const OCI_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip";
const OCI_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd";
const OCI_TAR = "application/vnd.oci.image.layer.v1.tar";

const enc = (s: string) => new TextEncoder().encode(s);
const hex = (s: string) => Uint8Array.from(Buffer.from(s, "hex"));
const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");
const concat = (...parts: Uint8Array[]) => new Uint8Array(Buffer.concat(parts));
const flip = (bytes: Uint8Array, at: number, mask = 0xff) => {
  const copy = bytes.slice();
  copy[at] = copy[at]! ^ mask;
  return copy;
};

function hasTool(name: string): boolean {
  try {
    execFileSync(name, ["--version"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}
const HAVE_GZIP = hasTool("gzip");
const HAVE_ZSTD = hasTool("zstd");
const cli = (tool: string, args: string[], input: Uint8Array) => new Uint8Array(execFileSync(tool, args, { input, maxBuffer: 1 << 30 }));

/** A stream of copies of `bytes`, cut into pieces whose sizes cycle through `sizes`. */
function streamOf(bytes: Uint8Array, sizes: number[] = [bytes.length || 1]): ReadableStream<Uint8Array> {
  let at = 0;
  let i = 0;
  return new ReadableStream({
    pull(controller) {
      if (at >= bytes.length) return controller.close();
      const n = sizes[i++ % sizes.length]!;
      controller.enqueue(bytes.slice(at, at + n));
      at += n;
    },
  });
}

async function collect(stream: ReadableStream<Uint8Array>, onChunk?: (c: Uint8Array) => void): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  const reader = stream.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return concat(...parts);
    onChunk?.(value);
    parts.push(value);
  }
}

/** The gunzip the decode helpers pass (set per suite below); the built-in decoder when undefined. */
let gunzip: GunzipFactory | undefined;
/** The zstd decoder the decode helpers pass (set per suite below); fzstd when undefined. */
let unzstd: UnzstdFactory | undefined;
const decode = (bytes: Uint8Array, mediaType: string, sizes?: number[]) => collect(decompressLayer(streamOf(bytes, sizes), mediaType, { gunzip, unzstd }));

async function decodeError(bytes: Uint8Array, mediaType: string, sizes?: number[]): Promise<Error> {
  try {
    await decode(bytes, mediaType, sizes);
  } catch (err) {
    return err as Error;
  }
  throw new Error("expected the layer to be rejected");
}

/** Deterministic mixed content: pseudo-random stretches and text-like lines. */
function mixedContent(size: number, seed = 1): Uint8Array {
  const out = new Uint8Array(size);
  let x = seed;
  let at = 0;
  while (at < size) {
    const random = (at >> 16) % 3 === 0;
    const end = Math.min(size, at + 65536);
    if (random) {
      for (; at < end; at++) {
        x ^= x << 13;
        x ^= x >>> 17;
        x ^= x << 5;
        out[at] = x & 0xff;
      }
    } else {
      const line = enc(`drwxr-xr-x root/root ${at} usr/share/doc/package-${at % 977}/copyright\n`);
      for (let j = 0; at < end; at++, j++) out[at] = line[j % line.length]!;
    }
  }
  return out;
}

// zstd fixtures, produced once with the zstd 1.5.4 CLI (`printf … | zstd -c`, options noted).
const ZSTD_HELLO = "28b52ffd045889000068656c6c6f207a73746420776f726c640a2a887e40"; // "hello zstd world\n"
const ZSTD_FIRST = "28b52ffd04586100006669727374206672616d650a0ec2c72a"; // "first frame\n"
const ZSTD_SECOND_NO_CHECKSUM = "28b52ffd00586900007365636f6e64206672616d650a"; // --no-check, "second frame\n"
const ZSTD_WINDOW_1GIB = "28b52ffd04a089000068656c6c6f207a73746420776f726c640a2a887e40"; // --long=30 from stdin
const ZSTD_WINDOW_128MIB = "28b52ffd0488a1000077696e646f7720617420746865206c696d69740a1ecb8581"; // --long=27
// -19 of multiBlockText(): 614000 bytes in 5 blocks (compressed and RLE), one single-segment frame.
const ZSTD_MULTI_BLOCK =
  "28b52ffda4705e090014040072040c0fc0ebee1267fcbf6cf74e29fd3a3659ffffffbf6ddbb6ddb66ddbdedddddd1d0d0b09072978a3c3121d1e60605b4ca535a830f2a43950d32ce862210419a146448115ace0fdffff334bfdb546009568589328ca424b28a943a8fa581c69e33072715194c4151176b80286b6fa4ee0fd020879a26eaee48c0581d29ccd75a4540000000100fdff6dfdb90602440000000100fdff3900026c000008000200ccaeb85c5aa21d000183f30a00ae8d0daf";

function multiBlockText(): Uint8Array {
  let s = "";
  for (let i = 0; i < 30000; i++) s += `entry ${i % 50} ${"ab".repeat(i % 5)}\n`;
  return enc(s + "\0".repeat(200000));
}

/** A skippable frame (magic 0x184D2A5?) holding `payload`. */
function skippableFrame(payload: Uint8Array): Uint8Array {
  const header = new Uint8Array(8);
  new DataView(header.buffer).setUint32(0, 0x184d2a53, true);
  new DataView(header.buffer).setUint32(4, payload.length, true);
  return concat(header, payload);
}

describe("compressionForMediaType", () => {
  it("maps OCI, Docker and nondistributable layer types", () => {
    const cases: [string, string | null][] = [
      [OCI_TAR, "none"],
      [OCI_GZIP, "gzip"],
      [OCI_ZSTD, "zstd"],
      ["application/vnd.oci.image.layer.nondistributable.v1.tar", "none"],
      ["application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", "gzip"],
      ["application/vnd.oci.image.layer.nondistributable.v1.tar+zstd", "zstd"],
      ["application/vnd.docker.image.rootfs.diff.tar.gzip", "gzip"],
      ["application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", "gzip"],
      ["application/vnd.docker.image.rootfs.diff.tar", "none"],
      ["Application/VND.OCI.image.layer.v1.tar+gzip; charset=binary", "gzip"],
    ];
    for (const [mediaType, compression] of cases) expect(compressionForMediaType(mediaType), mediaType).toBe(compression);
  });

  it("returns null for anything that is not a supported layer", () => {
    for (const mediaType of ["application/vnd.oci.image.config.v1+json", "application/vnd.oci.image.layer.v1.tar+bzip2", "application/octet-stream", ""]) {
      expect(compressionForMediaType(mediaType), mediaType).toBeNull();
    }
  });
});

describe("sniffCompression", () => {
  it("recognises gzip and zstd magic (including skippable frames) and nothing else", () => {
    expect(sniffCompression(hex("1f8b0800"))).toBe("gzip");
    expect(sniffCompression(hex("1f8b"))).toBe("gzip");
    expect(sniffCompression(hex(ZSTD_HELLO))).toBe("zstd");
    expect(sniffCompression(skippableFrame(enc("x")))).toBe("zstd");
    expect(sniffCompression(hex("28b52f"))).toBe("none");
    expect(sniffCompression(enc("etc/passwd\0"))).toBe("none");
    expect(sniffCompression(new Uint8Array(0))).toBe("none");
  });
});

const GUNZIPS: [string, GunzipFactory | null][] = [
  ["built-in (fflate + CRC-32)", null],
  ["injected node:zlib", nodeGunzip],
];

describe.each(GUNZIPS)("decompressLayer: gzip, %s", (_name, factory) => {
  const content = mixedContent(3 << 20);
  beforeAll(() => void (gunzip = factory ?? undefined));
  afterAll(() => void (gunzip = undefined));

  it("decodes a single member fed in awkward chunk sizes", async () => {
    const gz = new Uint8Array(zlib.gzipSync(content));
    for (const sizes of [[1, 7, 4093], [65536 * 3 + 1], [gz.length]]) {
      const out = await decode(gz, OCI_GZIP, sizes);
      expect(sha256(out), `chunks ${sizes}`).toBe(sha256(content));
    }
  });

  it.skipIf(!HAVE_GZIP)("decodes every member of concatenated node:zlib and gzip CLI members", async () => {
    const parts = [content.subarray(0, 1000), content.subarray(1000, 200_000), new Uint8Array(0), content.subarray(200_000)];
    const members = [
      zlib.gzipSync(parts[0]!),
      cli("gzip", ["-c", "-9"], parts[1]!),
      zlib.gzipSync(parts[2]!),
      cli("gzip", ["-c", "-1"], parts[3]!),
    ];
    const gz = concat(...members);
    // Sizes chosen so cuts land inside headers and trailers too.
    for (const sizes of [[gz.length], [3, 5, 11, 8191]]) {
      expect(sha256(await decode(gz, OCI_GZIP, sizes)), `chunks ${sizes}`).toBe(sha256(content));
    }
  });

  it("reads a member whose header carries a file name and comment", async () => {
    // FLG = FNAME | FCOMMENT; header fields written by hand, deflate body and trailer from zlib.
    const body = zlib.deflateRawSync(enc("named member\n"));
    const trailer = zlib.gzipSync(enc("named member\n")).subarray(-8);
    const gz = concat(hex("1f8b08180000000000ff"), enc("layer.tar\0a comment\0"), body, trailer);
    expect(new TextDecoder().decode(await decode(gz, OCI_GZIP, [4]))).toBe("named member\n");
  });

  it("rejects corrupt deflate data and a wrong CRC-32 with a one-line LayerFormatError", async () => {
    const gz = new Uint8Array(zlib.gzipSync(content.subarray(0, 100_000)));
    for (const bad of [flip(gz, 30), flip(gz, gz.length - 6, 0x01)]) {
      const err = await decodeError(bad, OCI_GZIP);
      expect(err).toBeInstanceOf(LayerFormatError);
      expect(err.message).toMatch(/^gzip data is corrupt: [^\n]+$/);
    }
  });

  it("catches an altered byte that inflate itself cannot see (stored block)", async () => {
    const gz = flip(new Uint8Array(zlib.gzipSync(enc("stored, not compressed"), { level: 0 })), 20, 0x20); // a literal byte
    expect((await decodeError(gz, OCI_GZIP)).message).toMatch(/^gzip data is corrupt: /);
  });

  it("rejects truncation anywhere, including inside the trailer", async () => {
    const gz = new Uint8Array(zlib.gzipSync(content.subarray(0, 300_000)));
    for (const cut of [gz.length - 1, gz.length - 4, gz.length - 8, gz.length - 9, gz.length >> 1, 12, 3]) {
      const err = await decodeError(gz.subarray(0, cut), OCI_GZIP, [1000]);
      expect(err, `cut at ${cut}`).toBeInstanceOf(LayerFormatError);
      expect(err.message).toMatch(/^gzip data is corrupt: /);
    }
  });

  it("rejects trailing bytes after the last member, however they are chunked", async () => {
    const gz = new Uint8Array(zlib.gzipSync(enc("payload\n")));
    const tails = [enc("garbage!"), hex("00"), hex("0000"), hex("414243"), new Uint8Array(100), hex("00414243"), hex("1f8b07")];
    for (const tail of tails) {
      for (const sizes of [[gz.length + tail.length], [gz.length, 1]]) {
        const err = await decodeError(concat(gz, tail), OCI_GZIP, sizes);
        expect(err, `tail ${Buffer.from(tail).toString("hex")} chunks ${sizes}`).toBeInstanceOf(LayerFormatError);
      }
    }
    if (factory) return; // the messages below are the built-in decoder's
    expect((await decodeError(concat(gz, enc("garbage!")), OCI_GZIP)).message).toBe(
      "gzip data is corrupt: bytes after member 1 are not a gzip member",
    );
    expect((await decodeError(concat(gz, hex("0000")), OCI_GZIP)).message).toBe(
      "gzip data is corrupt: 2 unexpected byte(s) after the last member",
    );
  });

  it("keeps output pieces bounded for a highly compressible layer", async () => {
    const zeros = new Uint8Array(32 << 20);
    const gz = new Uint8Array(zlib.gzipSync(zeros, { level: 9 }));
    expect(gz.length).toBeLessThan(50_000);
    let largest = 0;
    // One source chunk holding the whole layer: the decoder must still slice its work.
    const out = await collect(decompressLayer(streamOf(gz), OCI_GZIP, { gunzip }), (c) => void (largest = Math.max(largest, c.length)));
    expect(sha256(out)).toBe(sha256(zeros));
    expect(largest).toBeLessThanOrEqual(2 << 20);
  });

});

describe("crc32", () => {
  it("matches zlib's CRC-32 at every length around the 8-byte stride", () => {
    const data = mixedContent(4096, 7);
    for (let n = 0; n < 40; n++) expect(crc32(0, data.subarray(0, n)), `length ${n}`).toBe(zlib.crc32(data.subarray(0, n)));
    expect(crc32(crc32(0, data.subarray(0, 1001)), data.subarray(1001))).toBe(zlib.crc32(data));
  });
});

describe("zstdWasmModule", () => {
  it("compiles zstddec's module with fetch hidden for that call only", async () => {
    const fetch = globalThis.fetch;
    let calls = 0;
    globalThis.fetch = (async (...args: Parameters<typeof fetch>) => (calls++, fetch(...args))) as typeof fetch;
    const counted = globalThis.fetch;
    try {
      expect(await zstdWasmModule()).toBeInstanceOf(WebAssembly.Module);
      expect(calls).toBe(0);
      expect(globalThis.fetch).toBe(counted);
    } finally {
      globalThis.fetch = fetch;
    }
  });
});

/**
 * A stream decoder that takes one frame, as node:zlib's zstd does (it ends at the first frame's end
 * on Deno and workerd): libzstd in WebAssembly behind a check that no second frame reaches it.
 */
const wasm = wasmUnzstd(zstdWasmModule) as Extract<UnzstdFactory, { kind: "push" }>;
const oneFrameStreams: UnzstdFactory = {
  kind: "stream",
  create: () => {
    const frames = new ZstdFrameWalker();
    let decoder: ZstdPushDecoder | undefined;
    let started = false;
    return new TransformStream<Uint8Array, Uint8Array<ArrayBuffer>>({
      async transform(chunk, controller) {
        const between = started && frames.atFrameEnd();
        if (between || frames.scan(chunk, Infinity, true) < chunk.byteLength) throw new Error("a second frame reached a one-frame decoder");
        started = true;
        decoder ??= await wasm.create();
        decoder.push(chunk, (out) => controller.enqueue(out as Uint8Array<ArrayBuffer>));
      },
      flush() {
        decoder?.end();
        decoder?.free();
      },
    });
  },
};

const ZSTDS: [string, UnzstdFactory | null][] = [
  ["built-in (fzstd)", null],
  ["libzstd in WebAssembly (zstddec)", wasmUnzstd(zstdWasmModule)],
  ["libzstd in WebAssembly on a worker thread", threadUnzstd(zstdWasmModule)],
  ["a stream decoder per frame (one-frame decoders, as node:zlib's)", oneFrameStreams],
  ...(zlibUnzstd() ? [["node:zlib's native zstd", zlibUnzstd()!] as [string, UnzstdFactory]] : []),
];

describe.each(ZSTDS)("decompressLayer: zstd, %s", (_name, factory) => {
  beforeAll(() => void (unzstd = factory ?? undefined));
  afterAll(() => void (unzstd = undefined));

  it("decodes a single frame and a multi-block frame fed in awkward chunk sizes", async () => {
    expect(new TextDecoder().decode(await decode(hex(ZSTD_HELLO), OCI_ZSTD, [3]))).toBe("hello zstd world\n");
    const expected = sha256(multiBlockText());
    for (const sizes of [[1], [2, 17, 5], [1000]]) {
      expect(sha256(await decode(hex(ZSTD_MULTI_BLOCK), OCI_ZSTD, sizes)), `chunks ${sizes}`).toBe(expected);
    }
  });

  it("decodes consecutive frames, with and without checksums, and skips skippable frames", async () => {
    const data = concat(hex(ZSTD_FIRST), skippableFrame(enc("ignored metadata")), hex(ZSTD_SECOND_NO_CHECKSUM), hex(ZSTD_FIRST));
    for (const sizes of [[data.length], [1], [5, 3]]) {
      expect(new TextDecoder().decode(await decode(data, OCI_ZSTD, sizes)), `chunks ${sizes}`).toBe("first frame\nsecond frame\nfirst frame\n");
    }
  });

  it("refuses a window larger than 128 MiB before allocating it, and accepts 128 MiB", async () => {
    const err = await decodeError(hex(ZSTD_WINDOW_1GIB), OCI_ZSTD);
    expect(err).toBeInstanceOf(LayerFormatError);
    expect(err.message).toBe("zstd window of 1073741824 bytes is larger than the supported 134217728 bytes (128 MiB)");
    // The same check applies to a later frame.
    const later = await decodeError(concat(hex(ZSTD_FIRST), hex(ZSTD_WINDOW_1GIB)), OCI_ZSTD);
    expect(later.message).toMatch(/^zstd window of 1073741824 bytes/);
    expect(new TextDecoder().decode(await decode(hex(ZSTD_WINDOW_128MIB), OCI_ZSTD))).toBe("window at the limit\n");
  });

  it("rejects truncated, corrupt and trailing data", async () => {
    const frame = hex(ZSTD_MULTI_BLOCK);
    for (const cut of [frame.length - 1, frame.length - 4, 100, 7]) {
      const err = await decodeError(frame.subarray(0, cut), OCI_ZSTD, [16]);
      expect(err, `cut at ${cut}`).toBeInstanceOf(LayerFormatError);
      expect(err.message).toMatch(/^zstd data is corrupt: unexpected end of data in frame 1 \(truncated\)$/);
    }
    const corrupt = frame.slice();
    corrupt[9] = 0xff; // the first block's header: reserved block type
    expect((await decodeError(corrupt, OCI_ZSTD)).message).toMatch(/^zstd data is corrupt: /);
    expect((await decodeError(concat(hex(ZSTD_HELLO), enc("trailing")), OCI_ZSTD)).message).toBe(
      "zstd data is corrupt: bytes after frame 1 are not a zstd frame",
    );
    expect((await decodeError(new Uint8Array(0), OCI_ZSTD)).message).toBe("zstd data is corrupt: the layer is empty");
  });

  it("refuses corrupt block contents, and frees its decoder when the reader cancels", async () => {
    const frame = hex(ZSTD_MULTI_BLOCK);
    const corrupt = frame.slice();
    for (let i = 20; i < 60; i++) corrupt[i] = 0xa5; // inside the first compressed block
    const err = await decodeError(corrupt, OCI_ZSTD);
    expect(err).toBeInstanceOf(LayerFormatError);
    expect(err.message).toMatch(/^zstd data is corrupt: [^\n]+$/);
    const reader = decompressLayer(streamOf(frame, [40]), OCI_ZSTD, { unzstd }).getReader();
    await reader.read();
    await reader.cancel("enough");
  });

  it("ends with a skippable frame as the built-in decoder does", async () => {
    const data = concat(hex(ZSTD_FIRST), skippableFrame(enc("trailing metadata")));
    expect(new TextDecoder().decode(await decode(data, OCI_ZSTD, [7]))).toBe("first frame\n");
  });

  it.skipIf(!HAVE_ZSTD)("matches the zstd CLI on 8 MiB of mixed content at several levels", async () => {
    const content = mixedContent(8 << 20, 3);
    for (const args of [["-1"], ["-19"], ["--long=24", "-3"]]) {
      const zst = cli("zstd", ["-q", "-c", ...args], content);
      expect(sha256(await decode(zst, OCI_ZSTD, [65536, 333])), args.join(" ")).toBe(sha256(content));
    }
  });
  it.skipIf(!HAVE_ZSTD)("keeps output pieces bounded for a zero-filled zstd layer", async () => {
    const zeros = new Uint8Array(32 << 20);
    const zst = cli("zstd", ["-q", "-c", "-19"], zeros);
    let largest = 0;
    const out = await collect(decompressLayer(streamOf(zst), OCI_ZSTD, { unzstd }), (c) => void (largest = Math.max(largest, c.length)));
    expect(sha256(out)).toBe(sha256(zeros));
    expect(largest).toBeLessThanOrEqual(1 << 20);
  });
});

describe("decompressLayer: zstd on a worker thread", () => {
  const onWorker = threadUnzstd(zstdWasmModule);

  it.skipIf(!HAVE_ZSTD)("decodes no further than its reader's credit, and takes no more input than that needs", async () => {
    const content = mixedContent(64 << 20, 5);
    const zst = cli("zstd", ["-q", "-c", "-1"], content);
    let pulled = 0;
    let at = 0;
    const source = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (at >= zst.length) return controller.close();
        const piece = zst.slice(at, at + 65536);
        at += piece.length;
        pulled += piece.length;
        controller.enqueue(piece);
      },
    });
    const reader = decompressLayer(source, OCI_ZSTD, { unzstd: onWorker }).getReader();
    const first = await reader.read();
    expect(first.value!.length).toBeGreaterThan(0);
    // However long the reader waits, the worker stops at its credit and the writer at its room.
    let before = -1;
    for (let i = 0; i < 50 && pulled !== before; i++) {
      before = pulled;
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(pulled).toBe(before);
    expect(pulled).toBeLessThan(zst.length / 2);
    // Then it goes on to the same bytes.
    const rest = await collect(new ReadableStream({ pull: async (c) => { const r = await reader.read(); if (r.done) c.close(); else c.enqueue(r.value); } }));
    expect(sha256(concat(first.value!, rest))).toBe(sha256(content));
  });

  it.skipIf(!HAVE_ZSTD)("writes later pieces into the pieces given back, and leaves buffers it did not make alone", async () => {
    const recycle = (onWorker as Extract<UnzstdFactory, { kind: "stream" }>).recycle!;
    const content = mixedContent(24 << 20, 11);
    const zst = cli("zstd", ["-q", "-c", "-1"], content);
    const foreign = new Uint8Array(1 << 20);
    const offset = new Uint8Array(2 << 20).subarray(1 << 20);
    const given: Uint8Array[] = [];
    const hash = createHash("sha256");
    const reader = decompressLayer(streamOf(zst, [65536]), OCI_ZSTD, { unzstd: onWorker }).getReader();
    for (let i = 0; i < 10_000; i++) {
      const { done, value } = await reader.read();
      if (done) break;
      hash.update(value);
      recycle(value);
      given.push(value);
      recycle(foreign);
      recycle(offset);
    }
    expect(hash.digest("hex")).toBe(sha256(content));
    // Taken back: moved to the worker with a later credit, so detached here.
    const taken = given.filter((piece) => piece.byteLength === 0).length;
    expect(taken).toBeGreaterThan(given.length / 2);
    expect([foreign.byteLength, offset.byteLength]).toEqual([1 << 20, 1 << 20]);
  });

  it.skipIf(!HAVE_ZSTD)("fails the layer being decoded when the worker ends, and the next layer decodes on a new worker", async () => {
    const content = mixedContent(48 << 20, 9);
    const zst = cli("zstd", ["-q", "-c", "-1"], content);
    const reader = decompressLayer(streamOf(zst, [65536]), OCI_ZSTD, { unzstd: onWorker }).getReader();
    const first = await reader.read();
    expect(first.value!.length).toBeGreaterThan(0);
    const before = started.length;
    await started.at(-1)!.terminate();

    // Bounded: read until the reader fails or ends; it must not end with all the bytes.
    let got = first.value!.length;
    const failure = await (async () => {
      for (let i = 0; i < 1000; i++) {
        const r = await reader.read();
        if (r.done) return null;
        got += r.value.length;
      }
      return null;
    })().catch((err: Error) => err);
    expect(failure).toBeInstanceOf(Error);
    expect(failure!.message).toMatch(/zstd worker exited/);
    expect(got).toBeLessThan(content.length);

    expect(sha256(await collect(decompressLayer(streamOf(zst, [65536]), OCI_ZSTD, { unzstd: onWorker })))).toBe(sha256(content));
    expect(started.length).toBe(before + 1);
  });

  it("starts its worker on prepare(), and the first layer decodes on that worker", async () => {
    // Whatever worker earlier tests left idle ends first, so that prepare() has one to start.
    await started.at(-1)?.terminate();
    const before = started.length;
    onWorker.prepare!();
    onWorker.prepare!();
    expect(started.length).toBe(before + 1);
    expect(new TextDecoder().decode(await collect(decompressLayer(streamOf(hex(ZSTD_HELLO), [3]), OCI_ZSTD, { unzstd: onWorker })))).toBe("hello zstd world\n");
    expect(started.length).toBe(before + 1);
  });

  it("reports a module that failed to load to the first layer after prepare(), not to the process", async () => {
    const broken = threadUnzstd(() => Promise.reject(new Error("no module here")));
    broken.prepare!();
    await expect(collect(decompressLayer(streamOf(hex(ZSTD_HELLO), [3]), OCI_ZSTD, { unzstd: broken }))).rejects.toThrow(/no module here/);
  });

  it("decodes several layers at once, each to its own bytes", async () => {
    const texts = ["first frame\n", "second frame\n", "hello zstd world\n"];
    const layers = [hex(ZSTD_FIRST), hex(ZSTD_SECOND_NO_CHECKSUM), hex(ZSTD_HELLO)];
    const decoded = await Promise.all(layers.map((bytes) => collect(decompressLayer(streamOf(bytes, [3]), OCI_ZSTD, { unzstd: onWorker }))));
    expect(decoded.map((b) => new TextDecoder().decode(b))).toEqual(texts);
  });
});

describe("decompressLayer: media type, passthrough and stream behaviour", () => {
  it("names the media type and the actual format when they disagree", async () => {
    const gz = new Uint8Array(zlib.gzipSync(enc("x")));
    const mismatches: [Uint8Array, string, RegExp][] = [
      [hex(ZSTD_HELLO), OCI_GZIP, /says gzip, but the data is zstd \(28 b5 2f fd\)/],
      [gz, OCI_TAR, /says none, but the data is gzip \(1f 8b\)/],
      [enc("usr/bin/env"), OCI_ZSTD, /says zstd, but the data is uncompressed \(starts 75 73 72 2f\)/],
      [gz, "application/vnd.docker.image.rootfs.diff.tar.zstd", /application\/vnd\.docker\.image\.rootfs\.diff\.tar\.zstd says zstd/],
    ];
    for (const [bytes, mediaType, message] of mismatches) {
      const err = await decodeError(bytes, mediaType, [1]);
      expect(err).toBeInstanceOf(LayerFormatError);
      expect(err.message).toMatch(message);
    }
  });

  it("errors the stream for an unsupported media type and cancels the source", async () => {
    let cancelled = false;
    const source = new ReadableStream<Uint8Array>({ cancel: () => void (cancelled = true) });
    await expect(collect(decompressLayer(source, "application/vnd.oci.image.layer.v1.tar+lz4"))).rejects.toThrow(
      /unsupported layer media type "application\/vnd.oci.image.layer.v1.tar\+lz4"/,
    );
    expect(cancelled).toBe(true);
  });

  it("passes uncompressed layers through unchanged, including an empty one", async () => {
    const tar = mixedContent(1 << 20, 9);
    expect(sha256(await decode(tar, OCI_TAR, [1, 2, 3, 100_000]))).toBe(sha256(tar));
    expect((await decode(new Uint8Array(0), OCI_TAR)).length).toBe(0);
  });

  it("propagates a source error unchanged and cancels the source when the reader cancels", async () => {
    const gz = new Uint8Array(zlib.gzipSync(mixedContent(1 << 20)));
    const failing = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(gz.slice(0, 1000));
        controller.error(new Error("connection reset"));
      },
    });
    await expect(collect(decompressLayer(failing, OCI_GZIP))).rejects.toThrow("connection reset");

    let cancelReason: unknown;
    const source = new ReadableStream<Uint8Array>({
      pull: (c) => c.enqueue(gz.slice(0, 4096)),
      cancel: (reason) => void (cancelReason = reason),
    });
    const reader = decompressLayer(source, OCI_GZIP).getReader();
    await reader.read();
    await reader.cancel("enough");
    expect(cancelReason).toBe("enough");
  });

  it("uses an injected gunzip, still checking the magic and wrapping its errors", async () => {
    let used = 0;
    gunzip = () => {
      used++;
      return new DecompressionStream("gzip");
    };
    try {
      const gz = new Uint8Array(zlib.gzipSync(enc("native")));
      expect(new TextDecoder().decode(await decode(gz, OCI_GZIP, [2]))).toBe("native");
      expect(used).toBe(1);
      expect((await decodeError(hex(ZSTD_HELLO), OCI_GZIP)).message).toMatch(/says gzip, but the data is zstd/);
      const err = await decodeError(flip(gz, gz.length - 6, 1), OCI_GZIP);
      expect(err).toBeInstanceOf(LayerFormatError);
      expect(err.message).toMatch(/^gzip data is corrupt: /);
    } finally {
      gunzip = undefined;
    }
  });
});
