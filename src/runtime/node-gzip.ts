// node:zlib's gzip for the bootstraps the proxy keeps gzipped (src/http/gzip.ts): the same zlib
// at the same default level as CompressionStream, so the same bytes, but in one call on the thread
// pool rather than through the web-stream adapter. A 1.1 MB bootstrap: 35 against 90 ms in a fresh
// process, 30 against 38 ms after (docs/benchmarks.md).
import { gzip } from "node:zlib";
import type { Gzip } from "../http/gzip.ts";

export const nodeGzip: Gzip = (bytes) =>
  new Promise((resolve, reject) => {
    gzip(bytes, (err, zipped) => (err ? reject(err) : resolve(new Uint8Array(zipped.buffer, zipped.byteOffset, zipped.byteLength) as Uint8Array<ArrayBuffer>)));
  });
