// libzstd's streaming decoder (ZSTD_decompressStream) compiled to WebAssembly: several times
// fzstd's speed (docs/benchmarks.md, "Decompression, compression and hashing"). This file holds the
// decode step and a session's setup, which Node's worker-thread decoder runs as source
// (./zstd-thread.ts, Node before 22.15), and the same step as a decoder on the calling thread
// (`wasmUnzstd`: what bench:codecs measures and the tests compare; a runtime without worker
// threads could pass it). How the module is had is the runtime's business (compiled from bytes on
// Node; Workers forbid that, and have node:zlib's zstd). The module is the one zstddec ships: it
// exports malloc, free and libzstd's decompression API.
//
// The decoder here instantiates the module afresh, so its memory (up to the largest window it met)
// goes with it; the worker keeps a finished session's instance for its next frame. The frame
// walker in src/convert/decompress.ts has vetted every byte pushed here: no window over 128 MiB,
// no dictionary, nothing after the last frame.
import type { UnzstdFactory, ZstdPushDecoder } from "../convert/decompress.ts";

interface ZstdExports {
  memory: WebAssembly.Memory;
  malloc(size: number): number;
  free(ptr: number): void;
  ZSTD_createDCtx(): number;
  ZSTD_freeDCtx(dctx: number): number;
  ZSTD_decompressStream(dctx: number, output: number, input: number): number;
}

/** Compressed bytes copied into the module per call. */
export const INPUT_PIECE = 256 * 1024;
/** Output space per call: the frame walker hands over about 1 MiB of output at a time. */
export const OUTPUT_PIECE = 1024 * 1024;

/** libzstd's error codes (size_t, here 32 bits) are the last 120 values; their names, as libzstd words them. */
const ZSTD_ERRORS: Record<number, string> = {
  10: "unknown frame descriptor",
  12: "version not supported",
  14: "unsupported frame parameter",
  16: "frame requires too much memory for decoding",
  20: "data corruption detected",
  22: "restored data doesn't match checksum",
  24: "header of literals' block doesn't respect format specification",
  30: "dictionary is corrupted",
  32: "dictionary mismatch",
  64: "allocation error: not enough memory",
};

/** ZSTD_ERRORS as a JavaScript literal, for the worker's source (./zstd-thread.ts). */
export const ZSTD_ERRORS_SOURCE = JSON.stringify(ZSTD_ERRORS);

/** Input ended inside a frame: the message both decoders give. */
export const ZSTD_TRUNCATED = "unexpected end of data (truncated)";

/** One decoder's module instance and its buffers in the module's memory, and where its input stands. */
interface ZstdSession {
  z: ZstdExports;
  dctx: number;
  /** Where the input space and the output space (outSize bytes) are in the module's memory. */
  input: number;
  output: number;
  /** ZSTD_inBuffer and ZSTD_outBuffer: { pointer, size, pos }, three 32-bit words each. */
  inStruct: number;
  outStruct: number;
  outSize: number;
  /** Bytes in the input space, and how many of them libzstd has taken. */
  inLen: number;
  inPos: number;
}

/** A decoder session in `instance`, a new instance of the module. Self-contained, like zstdStep. */
function openZstdSession(instance: WebAssembly.Instance, inSize: number, outSize: number): ZstdSession {
  const z = instance.exports as unknown as ZstdExports;
  const session = { z, dctx: z.ZSTD_createDCtx(), input: z.malloc(inSize), output: z.malloc(outSize), inStruct: z.malloc(12), outStruct: z.malloc(12), outSize, inLen: 0, inPos: 0 };
  if (!session.dctx || !session.input || !session.output || !session.inStruct || !session.outStruct) throw new Error("zstd decoder: out of WebAssembly memory");
  return session;
}

/** What the module asks of its host: to be told of memory growth (the views are made afresh anyway). */
function zstdImports(): WebAssembly.Imports {
  return { env: { emscripten_notify_memory_growth() {} } };
}

/**
 * One ZSTD_decompressStream call over the input space's untaken bytes into the whole output
 * space. `ret` is 0 once a frame is whole, else a hint of the bytes still expected. It names nothing
 * outside itself (the error names come as an argument), so the worker runs its source as it is.
 */
function zstdStep(s: ZstdSession, errors: Record<number, string>): { produced: number; taken: number; ret: number } {
  // Views made afresh: the module's memory may have grown since the last call.
  const before = new Uint32Array(s.z.memory.buffer);
  before.set([s.input, s.inLen, s.inPos], s.inStruct >> 2);
  before.set([s.output, s.outSize, 0], s.outStruct >> 2);
  const ret = s.z.ZSTD_decompressStream(s.dctx, s.outStruct, s.inStruct) >>> 0;
  if (ret >= 2 ** 32 - 120) {
    const code = 2 ** 32 - ret;
    throw new Error(errors[code] ?? "libzstd error " + code);
  }
  const after = new Uint32Array(s.z.memory.buffer);
  const produced = after[(s.outStruct >> 2) + 2]!;
  const taken = after[(s.inStruct >> 2) + 2]!;
  // libzstd takes input or gives output on every call that does not fail; never spin. (With all
  // input taken, a call that finds no more output to flush is the end of that input.)
  if (produced === 0 && taken === s.inPos && taken < s.inLen) throw new Error("zstd decoder made no progress");
  return { produced, taken, ret };
}

/** zstdStep's, openZstdSession's and zstdImports' source, for the worker. */
export const zstdStepSource = zstdStep.toString();
export const openZstdSessionSource = openZstdSession.toString();
export const zstdImportsSource = zstdImports.toString();

export function wasmUnzstd(loadModule: () => Promise<WebAssembly.Module>): UnzstdFactory {
  return { kind: "push", create: async () => wasmDecoder(await loadModule()) };
}

async function wasmDecoder(module: WebAssembly.Module): Promise<ZstdPushDecoder> {
  const session = openZstdSession(await WebAssembly.instantiate(module, zstdImports()), INPUT_PIECE, OUTPUT_PIECE);
  const { z, input, output } = session;
  /** What the last call returned: 0 once a frame is whole, else a hint of the bytes still expected. */
  let expecting = 0;
  let freed = false;

  return {
    push(bytes, emit) {
      for (let at = 0; at < bytes.byteLength; ) {
        const n = Math.min(INPUT_PIECE, bytes.byteLength - at);
        new Uint8Array(z.memory.buffer).set(bytes.subarray(at, at + n), input);
        at += n;
        session.inLen = n;
        session.inPos = 0;
        for (;;) {
          const { produced, taken, ret } = zstdStep(session, ZSTD_ERRORS);
          expecting = ret;
          session.inPos = taken;
          // A copy: the next call writes over the module's output space.
          if (produced > 0) emit(new Uint8Array(z.memory.buffer).slice(output, output + produced));
          // Done with this piece once all of it went in and the output space was not filled, or the
          // frame ended with it: another call would begin waiting for a next frame's header.
          if (taken >= n && (produced < OUTPUT_PIECE || ret === 0)) break;
        }
      }
    },
    end() {
      if (expecting !== 0) throw new Error(ZSTD_TRUNCATED);
    },
    free() {
      if (freed) return;
      freed = true;
      z.ZSTD_freeDCtx(session.dctx);
    },
  };
}
