// libzstd's streaming decoder (ZSTD_decompressStream) compiled to WebAssembly, as the converter's
// zstd decoder: several times fzstd's speed (docs/benchmarks.md, "Decompression, compression and
// hashing"). Any runtime can use it given the compiled module; how the module is had is the
// runtime's business (compiled from bytes on Node; Workers forbid that and must import a .wasm).
// The module is the one zstddec ships: it exports malloc, free and libzstd's decompression API.
//
// Each decoder instantiates the module afresh, so its memory (up to the largest window it met)
// goes with it. The frame walker in src/convert/decompress.ts has vetted every byte pushed here:
// no window over 128 MiB, no dictionary, nothing after the last frame.
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
const INPUT_PIECE = 256 * 1024;
/** Output space per call: the frame walker hands over about 1 MiB of output at a time. */
const OUTPUT_PIECE = 1024 * 1024;

/** libzstd's error codes (size_t, here 32 bits) are the last 120 values; their names, as libzstd words them. */
const ZSTD_ERROR_FLOOR = 2 ** 32 - 120;
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

export function wasmUnzstd(loadModule: () => Promise<WebAssembly.Module>): UnzstdFactory {
  return { kind: "push", create: async () => wasmDecoder(await loadModule()) };
}

async function wasmDecoder(module: WebAssembly.Module): Promise<ZstdPushDecoder> {
  // The module tells of memory growth; the views below are re-made whenever the buffer changed.
  const instance = await WebAssembly.instantiate(module, { env: { emscripten_notify_memory_growth: () => {} } });
  const z = instance.exports as unknown as ZstdExports;
  let heap = new Uint8Array(z.memory.buffer);
  let words = new Uint32Array(z.memory.buffer);
  const views = () => {
    if (heap.buffer !== z.memory.buffer) {
      heap = new Uint8Array(z.memory.buffer);
      words = new Uint32Array(z.memory.buffer);
    }
  };
  const dctx = z.ZSTD_createDCtx();
  const input = z.malloc(INPUT_PIECE);
  const output = z.malloc(OUTPUT_PIECE);
  // ZSTD_inBuffer and ZSTD_outBuffer: { pointer, size, pos }, three 32-bit words each.
  const inStruct = z.malloc(12);
  const outStruct = z.malloc(12);
  if (!dctx || !input || !output || !inStruct || !outStruct) throw new Error("zstd decoder: out of WebAssembly memory");
  /** What the last call returned: 0 once a frame is whole, else a hint of the bytes still expected. */
  let expecting = 0;
  let freed = false;

  return {
    push(bytes, emit) {
      for (let at = 0; at < bytes.byteLength; ) {
        const n = Math.min(INPUT_PIECE, bytes.byteLength - at);
        views();
        heap.set(bytes.subarray(at, at + n), input);
        at += n;
        words.set([input, n, 0], inStruct >> 2);
        for (;;) {
          const consumed = words[(inStruct >> 2) + 2]!;
          words.set([output, OUTPUT_PIECE, 0], outStruct >> 2);
          const ret = z.ZSTD_decompressStream(dctx, outStruct, inStruct) >>> 0;
          if (ret >= ZSTD_ERROR_FLOOR) {
            const code = 2 ** 32 - ret;
            throw new Error(ZSTD_ERRORS[code] ?? `libzstd error ${code}`);
          }
          expecting = ret;
          views();
          const produced = words[(outStruct >> 2) + 2]!;
          // A copy: the next call writes over the module's output space.
          if (produced > 0) emit(heap.slice(output, output + produced));
          // Done with this piece once all of it went in and the output space was not filled, or the
          // frame ended with it: another call would begin waiting for a next frame's header.
          const taken = words[(inStruct >> 2) + 2]!;
          if (taken >= n && (produced < OUTPUT_PIECE || ret === 0)) break;
          // libzstd takes input or gives output on every call that does not fail; never spin.
          if (taken === consumed && produced === 0) throw new Error("zstd decoder made no progress");
        }
      }
    },
    end() {
      if (expecting !== 0) throw new Error("unexpected end of data (truncated)");
    },
    free() {
      if (freed) return;
      freed = true;
      z.ZSTD_freeDCtx(dctx);
    },
  };
}
