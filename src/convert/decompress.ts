// Layer decompression: media type → codec, checked against the magic bytes, decoded as a stream
// whose memory stays flat whatever the layer size.
//
// gzip is decoded by fflate plus our own member-trailer check (CRC-32 and size) on every runtime,
// so a layer is accepted or refused identically on Node, Deno and Workers. The native
// DecompressionStream can't be used as is: Node's stops quietly at trailing bytes that begin with
// 0x00, but only when they arrive in the same read as the end of the last member. A runtime entry
// can pass a faster strict gunzip down (on Node, node:zlib: docs/benchmarks.md).
//
// zstd is decoded by fzstd (pure JavaScript) unless the runtime entry passes a faster decoder down:
// node:zlib's zstd where the runtime has it, else libzstd compiled to WebAssembly. Every decoder
// sees the bytes only after our frame walker has: windows over 128 MiB, dictionaries, truncation
// and trailing bytes are refused here, the same way whichever decoder runs.
//
// fflate and fzstd are imported when a layer first needs them: where the runtime's decoders do the
// work (Node), loading them took 20 ms of every process start.
import type { Gunzip } from "fflate";
import type { Decompress as ZstdDecompress } from "fzstd";

export type LayerCompression = "gzip" | "zstd" | "none";

export class LayerFormatError extends Error {
  override name = "LayerFormatError";
}

/** Largest zstd window we decode: the buffer is allocated whole, and 128 MiB is what `--long` uses. */
export const MAX_ZSTD_WINDOW = 128 * 1024 * 1024;

const LAYER_MEDIA_TYPES = new Map<string, LayerCompression>([
  ["application/vnd.oci.image.layer.v1.tar", "none"],
  ["application/vnd.oci.image.layer.v1.tar+gzip", "gzip"],
  ["application/vnd.oci.image.layer.v1.tar+zstd", "zstd"],
  ["application/vnd.oci.image.layer.nondistributable.v1.tar", "none"],
  ["application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", "gzip"],
  ["application/vnd.oci.image.layer.nondistributable.v1.tar+zstd", "zstd"],
  ["application/vnd.docker.image.rootfs.diff.tar", "none"],
  ["application/vnd.docker.image.rootfs.diff.tar.gzip", "gzip"],
  ["application/vnd.docker.image.rootfs.diff.tar.zstd", "zstd"],
  ["application/vnd.docker.image.rootfs.foreign.diff.tar", "none"],
  ["application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", "gzip"],
]);

export function compressionForMediaType(mediaType: string): LayerCompression | null {
  const essence = mediaType.split(";", 1)[0]!.trim().toLowerCase();
  return LAYER_MEDIA_TYPES.get(essence) ?? null;
}

export function sniffCompression(head: Uint8Array): LayerCompression {
  if (head.length >= 2 && head[0] === 0x1f && head[1] === 0x8b) return "gzip";
  if (head.length >= 4 && isZstdMagic(readU32(head, 0))) return "zstd";
  return "none";
}

/**
 * A replacement gunzip, compressed bytes in, decompressed out. Like the built-in one it must refuse
 * corrupt, truncated and trailing data; decompressLayer still checks the magic bytes and turns its
 * errors into LayerFormatErrors.
 */
export type GunzipFactory = () => ReadableWritablePair<Uint8Array, Uint8Array<ArrayBuffer>>;

/**
 * A synchronous zstd decoder (libzstd in WebAssembly): push() decodes all of `input`, a piece of
 * the layer, handing output to `emit` as it goes, and throws on corrupt data. The frame walker
 * keeps each piece to a few blocks, so the output of one push stays about 1 MiB.
 */
export interface ZstdPushDecoder {
  push(input: Uint8Array, emit: (out: Uint8Array) => void): void;
  /** At the end of the input: throws if the decoder still expects bytes. */
  end(): void;
  /** Lets go of the decoder's memory; called once, whatever the outcome. */
  free(): void;
}

/**
 * A runtime's zstd decoder: a stream (node:zlib's, like GunzipFactory) or a synchronous one. A
 * stream decoder is given one frame, maybe a skippable one: node:zlib's zstd ends at the end of the
 * first frame (on Deno and workerd at least), so each frame of a layer gets a decoder of its own.
 */
export type UnzstdFactory = (
  | {
      kind: "stream";
      create: () => ReadableWritablePair<Uint8Array, Uint8Array<ArrayBuffer>>;
      /** Takes back a piece of output its reader is done with, to write over; ignores pieces it did not make. */
      recycle?: (piece: Uint8Array) => void;
    }
  | { kind: "push"; create: () => Promise<ZstdPushDecoder> }
) & {
  /**
   * Starts what the first decoder will need (a thread, a compiled module) for a caller that knows
   * a zstd layer is coming; it ends again unused after a while.
   */
  prepare?: () => void;
};

/** The decoders a runtime entry passes down; the built-in ones (fflate, fzstd) otherwise. */
export interface LayerDecoders {
  gunzip?: GunzipFactory;
  unzstd?: UnzstdFactory;
}

/** The layer's tar stream, decoded by the runtime's decoders where given, else the built-in ones. */
export function decompressLayer(source: ReadableStream<Uint8Array>, mediaType: string, decoders: LayerDecoders = {}): ReadableStream<Uint8Array> {
  const expected = compressionForMediaType(mediaType);
  if (expected === null) {
    void source.cancel().catch(() => {});
    return errored(new LayerFormatError(`unsupported layer media type ${JSON.stringify(mediaType)}`));
  }
  if (expected === "gzip" && decoders.gunzip) return viaFactory(source, mediaType, "gzip", decoders.gunzip);
  if (expected === "zstd" && decoders.unzstd?.kind === "stream") {
    const create = decoders.unzstd.create;
    return viaFactory(source, mediaType, "zstd", () => framewise(create), new ZstdFrameWalker());
  }
  const push = expected === "zstd" && decoders.unzstd?.kind === "push" ? decoders.unzstd.create : undefined;
  return viaPushDecoder(source, mediaType, expected, push);
}

// ---- the decode loop ----------------------------------------------------------------------------

/**
 * A synchronous decoder. push() decodes a prefix of `input`, emitting through its callback, and
 * returns how many bytes it took: each decoder picks a prefix whose output is bounded (about
 * 1 MiB), so no single step holds a whole zero-filled file in memory.
 */
interface PushDecoder {
  push(input: Uint8Array): number;
  /** Called once at end of input: throws if the data is incomplete. */
  finish(): void;
  /** Called once when the decoder is done with, however it ended. */
  close?(): void;
}

const TARGET_OUTPUT_PER_PUSH = 1024 * 1024;
/** Fewer, larger pulls: each costs a few promise hops through the stream machinery. */
const OUTPUT_PER_PULL = 256 * 1024;

function viaPushDecoder(
  source: ReadableStream<Uint8Array>,
  mediaType: string,
  expected: LayerCompression,
  createZstd?: () => Promise<ZstdPushDecoder>,
): ReadableStream<Uint8Array> {
  const reader = source.getReader();
  let decoder: PushDecoder | undefined;
  let closed = false;
  const close = () => {
    if (closed) return;
    closed = true;
    decoder?.close?.();
  };
  let pending: Uint8Array = new Uint8Array(0);
  let emitted = 0;

  return new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        try {
          if (!decoder) {
            pending = await readHead(reader, 4);
            checkMagic(expected, pending, mediaType);
            const emit = (out: Uint8Array): void => {
              if (out.length === 0) return;
              emitted += out.length;
              controller.enqueue(out);
            };
            if (expected === "gzip") decoder = gzipDecoder(emit, (await import("fflate")).Gunzip);
            else if (expected === "zstd") decoder = zstdDecoder(emit, createZstd ? await createZstd() : (await import("fzstd")).Decompress);
            else decoder = passthrough(emit);
          }
          // Decode one bounded step at a time until enough has come out to be worth a pull.
          emitted = 0;
          while (emitted < OUTPUT_PER_PULL) {
            if (pending.length === 0) {
              const { done, value } = await reader.read();
              if (done) {
                decoder.finish();
                close();
                controller.close();
                return;
              }
              pending = value;
              continue;
            }
            pending = pending.subarray(decoder.push(pending));
          }
        } catch (err) {
          close();
          void reader.cancel(err).catch(() => {});
          throw err;
        }
      },
      cancel(reason) {
        close();
        return reader.cancel(reason);
      },
    },
    { highWaterMark: 0 },
  );
}

function passthrough(emit: (out: Uint8Array) => void): PushDecoder {
  return {
    push(input) {
      emit(input);
      return input.length;
    },
    finish() {},
  };
}

// ---- gzip ---------------------------------------------------------------------------------------

/** Input kept for reading member trailers; a gzip header longer than this is refused. */
const GZIP_HISTORY = 256 * 1024;
/**
 * fflate has no output limit, so input is fed in slices sized by the last observed ratio. Deflate
 * expands at most ~1032×, so a sudden switch to zeros costs at most ~16 MiB once; 16 KiB slices
 * run at ~95% of the speed of 64 KiB ones.
 */
const GZIP_MAX_SLICE = 16 * 1024;
const DEFLATE_MAX_RATIO = 1032;

/**
 * fflate's Gunzip handles concatenated members but checks neither CRC-32 nor size and tolerates a
 * missing trailer, so each member's output is checked here against the 8-byte trailer that
 * precedes the next member (onmember gives its offset) or ends the input.
 */
function gzipDecoder(emit: (out: Uint8Array) => void, Inflater: typeof Gunzip): PushDecoder {
  const history = new InputHistory(GZIP_HISTORY);
  let member = 1;
  let memberStart = 0;
  let crc = 0;
  let size = 0;
  let emitted = 0;
  let ratio = DEFLATE_MAX_RATIO; // until measured, assume the worst

  const trailerMatches = (at: number): boolean => {
    const t = history.bytesAt(at, 8);
    return t !== null && readU32(t, 0) === crc && readU32(t, 4) === size;
  };
  const inflater = new Inflater((out) => {
    crc = crc32(crc, out);
    size = (size + out.length) >>> 0;
    emitted += out.length;
    emit(out);
  });
  inflater.onmember = (offset) => {
    if (history.bytesAt(offset - 8, 8) === null) throw gzipCorrupt(`header of member ${member + 1} is longer than ${GZIP_HISTORY} bytes`);
    if (!trailerMatches(offset - 8)) throw gzipCorrupt(`member ${member} fails its CRC-32/size check`);
    member++;
    memberStart = offset;
    crc = 0;
    size = 0;
  };
  const run = (input: Uint8Array, final: boolean): void => {
    try {
      inflater.push(input, final);
    } catch (err) {
      if (err instanceof LayerFormatError) throw err;
      const message = err instanceof Error ? err.message : String(err);
      if (message === "unexpected EOF") throw gzipCorrupt("unexpected end of data (truncated)");
      if (message === "invalid gzip data") throw gzipCorrupt(`bytes after member ${member} are not a gzip member`);
      throw gzipCorrupt(message);
    }
  };

  return {
    push(input) {
      const slice = input.subarray(0, Math.max(1, Math.min(GZIP_MAX_SLICE, Math.floor(TARGET_OUTPUT_PER_PUSH / ratio))));
      history.add(slice);
      emitted = 0;
      run(slice, false);
      if (emitted > 0) ratio = Math.max(1, emitted / slice.length);
      return slice.length;
    },
    finish() {
      run(new Uint8Array(0), true);
      const end = history.end;
      // Smallest member: 10-byte header, 2 bytes of deflate, 8-byte trailer.
      if (end - memberStart < 20) throw gzipCorrupt("unexpected end of data (truncated)");
      if (trailerMatches(end - 8)) return;
      // fflate ignores up to 3 stray bytes after the last trailer; name them if that is what they are.
      for (let extra = 1; extra <= 3; extra++) {
        if (trailerMatches(end - 8 - extra)) throw gzipCorrupt(`${extra} unexpected byte(s) after the last member`);
      }
      throw gzipCorrupt(`member ${member} fails its CRC-32/size check (altered or truncated)`);
    },
  };
}

function gzipCorrupt(detail: string): LayerFormatError {
  return new LayerFormatError(`gzip data is corrupt: ${detail}`);
}

/** The most recent input slices (by reference), addressable by absolute offset. */
class InputHistory {
  private parts: Uint8Array[] = [];
  private start = 0;
  end = 0;

  constructor(private readonly keep: number) {}

  add(bytes: Uint8Array): void {
    if (bytes.length === 0) return;
    this.parts.push(bytes);
    this.end += bytes.length;
    while (this.parts.length > 1 && this.end - this.start - this.parts[0]!.length >= this.keep) {
      this.start += this.parts.shift()!.length;
    }
  }

  /** A copy of `length` bytes at `offset`, or null if they are no longer (or not yet) held. */
  bytesAt(offset: number, length: number): Uint8Array | null {
    if (offset < this.start || offset + length > this.end) return null;
    const out = new Uint8Array(length);
    let at = this.start;
    let filled = 0;
    for (const part of this.parts) {
      const from = Math.max(offset + filled - at, 0);
      if (from < part.length && filled < length) {
        const piece = part.subarray(from, from + length - filled);
        out.set(piece, filled);
        filled += piece.length;
      }
      at += part.length;
    }
    return out;
  }
}

// CRC-32 (IEEE, as in gzip), slicing by 16: sixteen table lookups per four aligned 32-bit words,
// about twice as fast as slicing by 8 with byte loads (~1.1 GB/s vs ~0.6 GB/s here).
let crcTables: Int32Array | undefined;
const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

function makeCrcTables(): Int32Array {
  const t = new Int32Array(16 * 256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c;
  }
  for (let n = 0; n < 256; n++) {
    let c = t[n]!;
    for (let k = 1; k < 16; k++) {
      c = t[c & 0xff]! ^ (c >>> 8);
      t[k * 256 + n] = c;
    }
  }
  return t;
}

/** Continues a CRC-32 (start from 0) over `data`. */
export function crc32(crc: number, data: Uint8Array): number {
  const t = (crcTables ??= makeCrcTables());
  let c = ~crc;
  let i = 0;
  const n = data.length;
  if (LITTLE_ENDIAN) {
    for (; i < n && (data.byteOffset + i) & 3; i++) c = t[(c ^ data[i]!) & 0xff]! ^ (c >>> 8);
    const words = new Int32Array(data.buffer, data.byteOffset + i, ((n - i) >> 4) << 2);
    for (let w = 0; w < words.length; w += 4) {
      const a = c ^ words[w]!;
      const b = words[w + 1]!;
      const d = words[w + 2]!;
      const e = words[w + 3]!;
      c =
        t[3840 + (a & 0xff)]! ^ t[3584 + ((a >>> 8) & 0xff)]! ^ t[3328 + ((a >>> 16) & 0xff)]! ^ t[3072 + (a >>> 24)]! ^
        t[2816 + (b & 0xff)]! ^ t[2560 + ((b >>> 8) & 0xff)]! ^ t[2304 + ((b >>> 16) & 0xff)]! ^ t[2048 + (b >>> 24)]! ^
        t[1792 + (d & 0xff)]! ^ t[1536 + ((d >>> 8) & 0xff)]! ^ t[1280 + ((d >>> 16) & 0xff)]! ^ t[1024 + (d >>> 24)]! ^
        t[768 + (e & 0xff)]! ^ t[512 + ((e >>> 8) & 0xff)]! ^ t[256 + ((e >>> 16) & 0xff)]! ^ t[e >>> 24]!;
    }
    i += words.length * 4;
  }
  for (; i < n; i++) c = t[(c ^ data[i]!) & 0xff]! ^ (c >>> 8);
  return ~c >>> 0;
}

// ---- zstd ---------------------------------------------------------------------------------------

const ZSTD_MAGIC = 0xfd2fb528;
const ZSTD_MAX_BLOCK = 128 * 1024;
const ZSTD_BLOCKS_PER_PUSH = TARGET_OUTPUT_PER_PUSH / ZSTD_MAX_BLOCK;

function isZstdMagic(magic: number): boolean {
  return magic === ZSTD_MAGIC || (magic & 0xfffffff0) >>> 0 === 0x184d2a50; // or a skippable frame
}

/** The runtime's decoder, or fzstd, behind the frame walker. */
function zstdDecoder(emit: (out: Uint8Array) => void, decoder: ZstdPushDecoder | typeof ZstdDecompress): PushDecoder {
  const frames = new ZstdFrameWalker();
  const native = typeof decoder === "function" ? null : decoder;
  const fzstd = typeof decoder === "function" ? new decoder((out) => emit(out)) : null;
  const run = (input: Uint8Array, final: boolean): void => {
    try {
      if (fzstd) fzstd.push(input, final);
      else if (final) native!.end();
      else native!.push(input, emit);
    } catch (err) {
      if (err instanceof LayerFormatError) throw err;
      throw zstdCorrupt(err instanceof Error ? err.message : String(err));
    }
  };
  return {
    // The walker sees each slice first, so fzstd never allocates a window we refuse, and cuts it
    // after a few whole blocks, each at most 128 KiB of output.
    push(input) {
      const slice = input.subarray(0, frames.scan(input, ZSTD_BLOCKS_PER_PUSH));
      run(slice, false);
      return slice.length;
    },
    finish() {
      frames.end();
      run(new Uint8Array(0), true);
    },
    close() {
      native?.free();
    },
  };
}

export function zstdCorrupt(detail: string): LayerFormatError {
  return new LayerFormatError(`zstd data is corrupt: ${detail}`);
}

/**
 * Follows zstd frame and block headers without decoding: vets each frame's window size and
 * dictionary before fzstd sees it, and tells truncation apart from corruption.
 */
export class ZstdFrameWalker {
  private step: "magic" | "skippable-size" | "descriptor" | "frame-header" | "block-header" = "magic";
  private readonly header = new Uint8Array(16);
  private need = 4;
  private have = 0;
  private skip = 0;
  private descriptor = 0;
  private frames = 0;
  private blocks = 0;

  /**
   * Walks `input` up to the end of the `maxBlocks`-th block completed in this call, or with
   * `toFrameEnd` up to the end of the frame it is in; returns the bytes walked.
   */
  scan(input: Uint8Array, maxBlocks: number, toFrameEnd = false): number {
    this.blocks = 0;
    let i = 0;
    while (i < input.length) {
      if (this.skip === 0 && this.blocks >= maxBlocks && i > 0) break;
      if (toFrameEnd && i > 0 && this.atFrameEnd()) break;
      if (this.skip > 0) {
        const n = Math.min(this.skip, input.length - i);
        this.skip -= n;
        i += n;
        continue;
      }
      const n = Math.min(this.need - this.have, input.length - i);
      this.header.set(input.subarray(i, i + n), this.have);
      this.have += n;
      i += n;
      if (this.have === this.need) {
        this.have = 0;
        this.advance();
      }
    }
    return i;
  }

  /** Between frames: a frame (or none) was walked whole, and the next has not begun. */
  atFrameEnd(): boolean {
    return this.step === "magic" && this.have === 0 && this.skip === 0;
  }

  end(): void {
    if (!this.atFrameEnd()) {
      const frame = this.step === "magic" && this.skip === 0 ? this.frames + 1 : this.frames;
      throw zstdCorrupt(`unexpected end of data in frame ${frame} (truncated)`);
    }
  }

  private expect(step: ZstdFrameWalker["step"], bytes: number): void {
    this.step = step;
    this.need = bytes;
  }

  private advance(): void {
    const h = this.header;
    switch (this.step) {
      case "magic": {
        const magic = readU32(h, 0);
        if (!isZstdMagic(magic)) throw zstdCorrupt(`bytes after frame ${this.frames} are not a zstd frame`);
        this.frames++;
        return magic === ZSTD_MAGIC ? this.expect("descriptor", 1) : this.expect("skippable-size", 4);
      }
      case "skippable-size":
        this.skip = readU32(h, 0);
        return this.expect("magic", 4);
      case "descriptor": {
        const d = (this.descriptor = h[0]!);
        if (d & 0x08) throw zstdCorrupt("reserved bit set in a frame header");
        const single = (d >> 5) & 1;
        const fcsFlag = d >> 6;
        return this.expect("frame-header", (single ? 0 : 1) + [0, 1, 2, 4][d & 3]! + (fcsFlag ? 1 << fcsFlag : single));
      }
      case "frame-header": {
        const d = this.descriptor;
        const single = (d >> 5) & 1;
        let at = 0;
        let window = 0;
        if (!single) {
          const exponent = h[0]! >> 3;
          const base = 2 ** (10 + exponent);
          window = base + (base / 8) * (h[0]! & 7);
          at = 1;
        }
        const dictBytes = [0, 1, 2, 4][d & 3]!;
        const dictionary = readUint(h, at, dictBytes);
        at += dictBytes;
        if (dictionary !== 0) throw new LayerFormatError(`zstd frame needs dictionary ${dictionary}; dictionaries are not supported`);
        const fcsFlag = d >> 6;
        if (single) window = readUint(h, at, fcsFlag ? 1 << fcsFlag : 1) + (fcsFlag === 1 ? 256 : 0);
        if (window > MAX_ZSTD_WINDOW) {
          throw new LayerFormatError(`zstd window of ${window} bytes is larger than the supported ${MAX_ZSTD_WINDOW} bytes (128 MiB)`);
        }
        return this.expect("block-header", 3);
      }
      case "block-header": {
        const v = h[0]! | (h[1]! << 8) | (h[2]! << 16);
        const type = (v >> 1) & 3;
        const size = v >>> 3;
        if (type === 3) throw zstdCorrupt("reserved block type");
        if (size > ZSTD_MAX_BLOCK) throw zstdCorrupt(`block of ${size} bytes exceeds 128 KiB`);
        this.skip = type === 1 ? 1 : size; // an RLE block stores one byte
        this.blocks++;
        if (v & 1) {
          this.skip += this.descriptor & 0x04 ? 4 : 0; // content checksum
          return this.expect("magic", 4);
        }
        return this.expect("block-header", 3);
      }
    }
  }
}

// ---- helpers ------------------------------------------------------------------------------------

function readU32(b: Uint8Array, at: number): number {
  return (b[at]! | (b[at + 1]! << 8) | (b[at + 2]! << 16) | (b[at + 3]! << 24)) >>> 0;
}

/** Little-endian unsigned integer of up to 8 bytes (beyond 2^53 it is approximate, fine for limits). */
function readUint(b: Uint8Array, at: number, bytes: number): number {
  let value = 0;
  for (let i = bytes - 1; i >= 0; i--) value = value * 256 + b[at + i]!;
  return value;
}

const MAGIC_NAMES: Record<LayerCompression, string> = {
  gzip: "gzip (1f 8b)",
  zstd: "zstd (28 b5 2f fd)",
  none: "uncompressed",
};

function checkMagic(expected: LayerCompression, head: Uint8Array, mediaType: string): void {
  if (head.length === 0) {
    if (expected === "none") return;
    throw new LayerFormatError(`${expected} data is corrupt: the layer is empty`);
  }
  const actual = sniffCompression(head);
  if (actual !== expected) {
    const first = Array.from(head.subarray(0, 4), (b) => b.toString(16).padStart(2, "0")).join(" ");
    throw new LayerFormatError(
      `layer media type ${mediaType} says ${expected}, but the data is ${MAGIC_NAMES[actual]} (starts ${first})`,
    );
  }
}

/** Reads until at least `n` bytes (or the end) and returns them all. */
async function readHead(reader: ReadableStreamDefaultReader<Uint8Array>, n: number): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  let total = 0;
  while (total < n) {
    const { done, value } = await reader.read();
    if (done) break;
    parts.push(value);
    total += value.length;
  }
  if (parts.length === 1) return parts[0]!;
  const out = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/**
 * One stream decoder per zstd frame, as one stream: the input is cut at frame ends, and the
 * frames' outputs follow each other in order (a skippable frame's is empty). The next frame's
 * decoder may start while the last one's output drains; each holds its own bounded buffers.
 */
function framewise(create: () => ReadableWritablePair<Uint8Array, Uint8Array<ArrayBuffer>>): ReadableWritablePair<Uint8Array, Uint8Array<ArrayBuffer>> {
  const walker = new ZstdFrameWalker();
  const out = new TransformStream<Uint8Array<ArrayBuffer>, Uint8Array<ArrayBuffer>>();
  let current: WritableStreamDefaultWriter<Uint8Array> | null = null;
  /** The frames' outputs copied to `out` one after another; fails with the first failure. */
  let outputs: Promise<void> = Promise.resolve();
  const endFrame = () => {
    void current?.close().catch(() => {}); // a failure shows on its readable, piped below
    current = null;
  };
  const writable = new WritableStream<Uint8Array>({
    async write(chunk) {
      for (let at = 0; at < chunk.byteLength; ) {
        const n = walker.scan(chunk.subarray(at), Infinity, true);
        const piece = chunk.subarray(at, at + n);
        at += n;
        if (!current) {
          const decoder = create();
          current = decoder.writable.getWriter();
          outputs = outputs.then(() => decoder.readable.pipeTo(out.writable, { preventClose: true }));
          // Seen at once, not only when its turn to be copied comes: a write may be waiting on it.
          outputs.catch((err: unknown) => void current?.abort(err).catch(() => {}));
        }
        await current.write(piece);
        if (walker.atFrameEnd()) endFrame();
      }
    },
    close() {
      endFrame();
      void outputs.then(() => out.writable.close()).catch(() => {});
    },
    abort(reason) {
      void current?.abort(reason).catch(() => {});
      current = null;
      void out.writable.abort(reason).catch(() => {});
    },
  });
  return { writable, readable: out.readable };
}

function errored(err: Error): ReadableStream<Uint8Array> {
  return new ReadableStream<Uint8Array>({ start: (c) => c.error(err) });
}

/**
 * An injected stream decoder: the head is still checked here, zstd input is walked frame by frame
 * before the decoder sees it (`frames`), and decode errors become LayerFormatErrors.
 */
function viaFactory(
  source: ReadableStream<Uint8Array>,
  mediaType: string,
  codec: "gzip" | "zstd",
  factory: () => ReadableWritablePair<Uint8Array, Uint8Array<ArrayBuffer>>,
  frames?: ZstdFrameWalker,
): ReadableStream<Uint8Array> {
  const corrupt = codec === "gzip" ? gzipCorrupt : zstdCorrupt;
  const reader = source.getReader();
  let headChecked = false;
  let sourceFailed = false;
  const input = new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        if (!headChecked) {
          const head = await readHead(reader, 4).catch((err: unknown) => {
            sourceFailed = true;
            throw err;
          });
          checkMagic(codec, head, mediaType);
          headChecked = true;
          frames?.scan(head, Infinity);
          controller.enqueue(head);
          return;
        }
        const { done, value } = await reader.read().catch((err: unknown) => {
          sourceFailed = true;
          throw err;
        });
        if (done) {
          frames?.end();
          controller.close();
        } else {
          frames?.scan(value, Infinity);
          controller.enqueue(value);
        }
      },
      cancel: (reason) => reader.cancel(reason),
    },
    { highWaterMark: 0 },
  );
  // Web stream chunks are ArrayBuffer-backed; the type only matters to DecompressionStream's signature.
  const output = (input as ReadableStream<Uint8Array<ArrayBuffer>>).pipeThrough(factory()).getReader();
  return new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        try {
          const { done, value } = await output.read();
          if (done) controller.close();
          else controller.enqueue(value);
        } catch (err) {
          if (sourceFailed || err instanceof LayerFormatError) throw err;
          throw corrupt(err instanceof Error ? err.message : String(err));
        }
      },
      cancel: (reason) => output.cancel(reason),
    },
    { highWaterMark: 0 },
  );
}
