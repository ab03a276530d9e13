// Heap an image merge holds per inode of its layers (the basis of the Worker's merge limit,
// MERGE_BYTES_PER_ENTRY in src/convert/image.ts): two node_modules-like layers
// (bench/entry-memory-layer.mjs) under different roots, so that the image holds every inode of both,
// are converted, then their bootstraps are merged and encoded as convertImage does, the live heap
// (V8 heap and array buffers) measured after full collections with everything held. The encoder's
// own arrays (about 28 bytes an inode, while it writes) are gone by then.
//   npm run bench:merge-memory [-- FILES_PER_LAYER]     (default 50000)
import { createReadStream, mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { fileURLToPath } from "node:url";
import { writeNodeModulesLayer } from "./entry-memory-layer.mjs";

if (typeof globalThis.gc !== "function") throw new Error("run with node --expose-gc (npm run bench:merge-memory does)");
const root = fileURLToPath(new URL("..", import.meta.url));
const dist = (p) => import(join(root, "dist", "src", p));
const { convertLayer } = await dist("convert/layer.js");
const { mergeTrees, encodeMerged } = await dist("convert/merge.js");
const { MemoryStore } = await dist("store/memory.js");
const { nodeHasher } = await dist("hash/node.js");
const { nodeGunzip } = await dist("runtime/node-gunzip.js");
const { parseDigest } = await dist("oci/reference.js");

// Collected twice, a turn of the event loop apart: array buffers are freed after the collection
// that finds them dead, on a helper thread.
const live = async () => {
  globalThis.gc();
  await new Promise((r) => setImmediate(r));
  globalThis.gc();
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
};
const files = Number(process.argv[2] ?? 50_000);
const work = mkdtempSync(join(tmpdir(), "skiff-merge-memory-"));
try {
  const base = await live();
  const bootstraps = [];
  for (const i of [0, 1]) {
    const path = join(work, `layer-${i}.tar.gz`);
    const { digest } = writeNodeModulesLayer(path, files + i, i === 0 ? "node_modules" : "srv/app/node_modules");
    const layer = { digest: parseDigest(digest), mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", size: statSync(path).size, open: async () => Readable.toWeb(createReadStream(path)) };
    const converted = await convertLayer(layer, { store: new MemoryStore(), hasher: nodeHasher, gunzip: nodeGunzip, params: { chunkShift: 20, codec: "none" } });
    bootstraps.push(converted.bootstrap);
  }
  const inodes = bootstraps.reduce((n, b) => n + b.inodeCount, 0);
  const before = await live();
  // mergeLayers in its two halves, as convertImage calls it: the image's tree, then its bootstrap.
  let started = performance.now();
  const merged = mergeTrees(bootstraps);
  const mergeMs = performance.now() - started;
  const atMerge = await live();
  started = performance.now();
  const bytes = encodeMerged(merged, "linux/amd64");
  const encodeMs = performance.now() - started;
  const atEncode = await live();
  const perInode = (bytesHeld) => Math.round(bytesHeld / inodes);
  // The merged tree is alive until the encoding is done: used here, so that the collections above keep it.
  if (merged.skipped.count > 0) console.log(`${merged.skipped.count} entries left out of the merge`);
  console.log(
    `${inodes} inodes in 2 layers: at the peak ${perInode(Math.max(atMerge, atEncode) - base)} bytes per inode held, everything included; ` +
      `the layers' bootstraps ${perInode(before - base)}, the merged tree ${perInode(atMerge - before)} more, and ${perInode(atEncode - before)} more with the image encoded (${bytes.length} bytes); ` +
      `merged in ${mergeMs.toFixed(0)} ms, encoded in ${encodeMs.toFixed(0)} ms`,
  );
} finally {
  rmSync(work, { recursive: true, force: true });
}
