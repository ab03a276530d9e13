// node:zlib's zstd decoder as the converter's, where the runtime has one: Node 22.15 and later,
// Deno 2.9, and workerd through nodejs_compat. On Node and Deno it runs on the thread pool like
// gunzip; in workerd it is native code on the invocation's thread. Either way several times the
// WebAssembly and pure-JS decoders (docs/benchmarks.md).
import * as zlib from "node:zlib";
import type { Transform } from "node:stream";
import type { UnzstdFactory } from "../convert/decompress.ts";
import { nodeZlibDecoder, ZLIB_OUTPUT_PIECE } from "./node-gunzip.ts";

type ZstdDecompress = (options: { chunkSize: number }) => Transform & { bytesWritten: number };

/** node:zlib's zstd decoder, or undefined when this runtime has none (Node before 22.15). */
export function zlibUnzstd(): UnzstdFactory | undefined {
  const create = (zlib as unknown as { createZstdDecompress?: ZstdDecompress }).createZstdDecompress;
  if (typeof create !== "function") return undefined;
  return { kind: "stream", create: () => nodeZlibDecoder(create({ chunkSize: ZLIB_OUTPUT_PIECE })) };
}
