// Heap an image merge holds per inode of its layers (the basis of the Worker's merge limit,
// MERGE_BYTES_PER_ENTRY in src/convert/image.ts): two node_modules-like layers (bench/entry-memory-layer.mjs)
// are converted, then their bootstraps are merged and encoded as convertImage does, the live heap
// (V8 heap and array buffers) measured after a full collection with everything held.
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
const { mergeLayers } = await dist("convert/merge.js");
const { encodeBootstrap } = await dist("format/encode.js");
const { MemoryStore } = await dist("store/memory.js");
const { nodeHasher } = await dist("hash/node.js");
const { nodeGunzip } = await dist("runtime/node-gunzip.js");
const { parseDigest } = await dist("oci/reference.js");

const live = () => {
  globalThis.gc();
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
};
const files = Number(process.argv[2] ?? 50_000);
const work = mkdtempSync(join(tmpdir(), "skiff-merge-memory-"));
try {
  const bootstraps = [];
  for (const i of [0, 1]) {
    const path = join(work, `layer-${i}.tar.gz`);
    const { digest } = writeNodeModulesLayer(path, files + i);
    const layer = { digest: parseDigest(digest), mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", size: statSync(path).size, open: async () => Readable.toWeb(createReadStream(path)) };
    const converted = await convertLayer(layer, { store: new MemoryStore(), hasher: nodeHasher, gunzip: nodeGunzip, params: { chunkShift: 20, codec: "none" } });
    bootstraps.push(converted.bootstrap);
  }
  const inodes = bootstraps.reduce((n, b) => n + b.inodeCount, 0);
  const before = live();
  const merged = mergeLayers(bootstraps.map((b) => b.toModel()), "linux/amd64");
  const atMerge = live();
  const bytes = encodeBootstrap(merged.model);
  const atEncode = live();
  const perInode = (bytesHeld) => Math.round(bytesHeld / inodes);
  // The merged tree is alive until the encoding is done: used here, so that the collections above keep it.
  if (merged.skipped.count > 0) console.log(`${merged.skipped.count} entries left out of the merge`);
  console.log(`${inodes} inodes in 2 layers: the merge holds ${perInode(atMerge - before)} bytes per inode over the layers' bootstraps, ${perInode(atEncode - before)} with the merged bootstrap encoded (${bytes.length} bytes); the bootstraps themselves ${perInode(before)} per inode with the process's own heap`);
} finally {
  rmSync(work, { recursive: true, force: true });
}
