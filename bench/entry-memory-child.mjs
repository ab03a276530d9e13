// One conversion for bench/entry-memory.mjs, in a process of its own (node --expose-gc, and the
// heap limit under test): converts the layer file with the built converter into a store on disk and
// prints one JSON line. With --sample, the heap is collected and measured every 256 KiB of layer
// read and once more with the result held: the largest is the conversion's peak live heap
// (the V8 heap and array buffers).
//   node --expose-gc [--max-old-space-size=128] bench/entry-memory-child.mjs LAYER DIGEST SIZE STORE_DIR [--sample]
import { createReadStream } from "node:fs";
import { Readable } from "node:stream";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
const dist = (p) => import(join(root, "dist", "src", p));
const { convertLayer } = await dist("convert/layer.js");
const { FsStore } = await dist("store/fs.js");
const { nodeHasher } = await dist("hash/node.js");
const { nodeGunzip } = await dist("runtime/node-gunzip.js");
const { parseDigest } = await dist("oci/reference.js");

const [layerPath, digest, size, storeDir] = process.argv.slice(2);
const sample = process.argv.includes("--sample");
// Typed arrays' bytes live outside the V8 heap on Node, yet count in a Worker's 128 MB: both are counted.
const heap = () => {
  globalThis.gc?.();
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
};
const base = heap();
let peak = base;
let sinceSample = 0;
const onBytes = (n) => {
  if (!sample) return;
  sinceSample += n;
  if (sinceSample < 256 * 1024) return;
  sinceSample = 0;
  peak = Math.max(peak, heap());
};
// The moment of the most held: the data blob's commit. The converter encodes the bootstrap while
// that commit is pending, so when it settles the tree and the bootstrap are both alive. (The
// encoder's own working arrays, a few bytes per inode, are gone by then.)
let atEncode = 0;
const files = await new FsStore(storeDir).init();
const store = new Proxy(files, {
  get(target, prop) {
    if (prop !== "put") return typeof target[prop] === "function" ? target[prop].bind(target) : target[prop];
    return async (key) => {
      const upload = await target.put(key);
      if (!sample || !key.endsWith("/data")) return upload;
      return { write: (b) => upload.write(b), cancel: () => upload.cancel(), commit: async () => {
        await upload.commit();
        await new Promise((r) => setTimeout(r, 0));
        atEncode = heap();
        peak = Math.max(peak, atEncode);
      } };
    };
  },
});
const started = performance.now();
const result = await convertLayer(
  { digest: parseDigest(digest), mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", size: Number(size), open: async () => Readable.toWeb(createReadStream(layerPath, { highWaterMark: 1 << 20 })) },
  { store, hasher: nodeHasher, gunzip: nodeGunzip, params: { chunkShift: 20, codec: "none" }, onBytes },
);
const seconds = (performance.now() - started) / 1000;
if (sample) peak = Math.max(peak, heap());
console.log(JSON.stringify({ entries: result.stats.entries, inodes: result.bootstrap.inodeCount, bootstrapBytes: result.bootstrap.bytes.length, seconds, baseHeap: base, peakHeap: peak, atEncode, maxRss: process.resourceUsage().maxRSS * 1024 }));
