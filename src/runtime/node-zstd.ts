// The converter's zstd decoder on Node and Deno: node:zlib's where the runtime has one (Node 22.15
// and later, Deno 2), on the thread pool like gunzip; else libzstd in WebAssembly (./zstd-wasm.ts)
// on the converting thread. Either is several times fzstd's speed (docs/benchmarks.md).
import * as zlib from "node:zlib";
import type { Transform } from "node:stream";
import { ZSTDDecoder } from "zstddec/stream";
import type { UnzstdFactory } from "../convert/decompress.ts";
import { nodeZlibDecoder, ZLIB_OUTPUT_PIECE } from "./node-gunzip.ts";
import { wasmUnzstd } from "./zstd-wasm.ts";

type ZstdDecompress = (options: { chunkSize: number }) => Transform & { bytesWritten: number };

/** node:zlib's zstd decoder, when this runtime has one (older Node does not). */
export function nativeUnzstd(): UnzstdFactory | undefined {
  const create = (zlib as unknown as { createZstdDecompress?: ZstdDecompress }).createZstdDecompress;
  if (typeof create !== "function") return undefined;
  return { kind: "stream", create: () => nodeZlibDecoder(create({ chunkSize: ZLIB_OUTPUT_PIECE })) };
}

let compiled: Promise<WebAssembly.Module> | undefined;

/**
 * zstddec's WebAssembly build of libzstd, compiled once per process. zstddec hands the compiled
 * module to its `_init` hook; the converter instantiates it itself, one instance per layer.
 */
export function zstdWasmModule(): Promise<WebAssembly.Module> {
  compiled ??= new Promise<WebAssembly.Module>((resolve, reject) => {
    const decoder = new ZSTDDecoder();
    let module: WebAssembly.Module | undefined;
    decoder._init = (result) => void (module = result.module);
    decoder.init().then(
      () => (module ? resolve(module) : reject(new Error("zstddec did not hand over its WebAssembly module"))),
      reject,
    );
  });
  return compiled;
}

/** The fastest zstd decoder here: native where the runtime has it, else WebAssembly. */
export function nodeUnzstd(): UnzstdFactory {
  return nativeUnzstd() ?? wasmUnzstd(zstdWasmModule);
}
