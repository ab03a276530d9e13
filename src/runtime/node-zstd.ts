// The converter's zstd decoder on Node and Deno: node:zlib's where the runtime has one
// (./zlib-zstd.ts), else libzstd in WebAssembly (./zstd-wasm.ts) on a worker thread
// (./zstd-thread.ts). Either decodes beside the converting thread, at several times fzstd's speed
// (docs/benchmarks.md).
import type { UnzstdFactory } from "../convert/decompress.ts";
import { zlibUnzstd } from "./zlib-zstd.ts";
import { threadUnzstd } from "./zstd-thread.ts";

let compiled: Promise<WebAssembly.Module> | undefined;

/**
 * zstddec's WebAssembly build of libzstd, compiled once per process. zstddec hands the compiled
 * module to its `_init` hook; the converter instantiates it itself, one instance per layer.
 */
export function zstdWasmModule(): Promise<WebAssembly.Module> {
  compiled ??= compileZstddec();
  return compiled;
}

/** zstddec is imported when first needed: only Node before 22.15 decodes zstd with it. */
async function compileZstddec(): Promise<WebAssembly.Module> {
  const { ZSTDDecoder } = await import("zstddec/stream");
  const decoder = new ZSTDDecoder();
  let module: WebAssembly.Module | undefined;
  decoder._init = (result) => void (module = result.module);
  // zstddec fetches its module from a data: URL wherever fetch exists, and Node loads its whole
  // fetch stack on the first call: about 35 ms and 50 ms of CPU in a process that never fetches,
  // such as `skiff convert`. Without fetch it decodes the same base64 with Buffer. init() reads
  // the global synchronously, so it is hidden for that call only.
  const { fetch } = globalThis;
  globalThis.fetch = undefined as unknown as typeof fetch;
  let loaded: Promise<void>;
  try {
    loaded = decoder.init();
  } finally {
    globalThis.fetch = fetch;
  }
  await loaded;
  if (!module) throw new Error("zstddec did not hand over its WebAssembly module");
  return module;
}

/** The fastest zstd decoder here: native where the runtime has it, else WebAssembly on a worker thread. */
export function nodeUnzstd(): UnzstdFactory {
  return zlibUnzstd() ?? threadUnzstd(zstdWasmModule);
}
