// An image whose layers must be merged is refused, as a bad layer is, when they hold more inodes
// together than `maxMergedEntries` (a Worker sets it from its memory: mergeLimitForMemory); each
// layer has been converted by then, and an image under the limit merges as before.
import { gzipSync } from "node:zlib";
import { describe, expect, it } from "vitest";
import { convertImage, mergeLimitForMemory } from "../../src/convert/image.ts";
import type { ImageSource } from "../../src/convert/image-source.ts";
import { LayerFormatError } from "../../src/convert/decompress.ts";
import { nodeHasher } from "../../src/hash/node.ts";
import { parseDigest, type Digest } from "../../src/oci/reference.ts";
import { MemoryStore } from "../../src/store/memory.ts";
import { MT, sha256, tarArchive } from "../e2e/harness/images.ts";

/** An image of two gzip layers of `files` files each, served from memory. */
function twoLayerImage(files: number): ImageSource {
  const blobs = new Map<string, Buffer>();
  const put = (bytes: Buffer) => {
    const digest = sha256(bytes);
    blobs.set(digest, bytes);
    return digest;
  };
  const layers = [0, 1].map((n) => {
    const gz = gzipSync(tarArchive([{ name: `l${n}`, type: "dir" }, ...Array.from({ length: files }, (_, i) => ({ name: `l${n}/f${i}`, type: "file" as const, data: Buffer.from(`${n} ${i}\n`) }))]));
    return { mediaType: MT.layerGzip, digest: put(gz), size: gz.length };
  });
  const config = Buffer.from(JSON.stringify({ architecture: "amd64", os: "linux", rootfs: { type: "layers", diff_ids: [] } }));
  const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MT.manifest, config: { mediaType: MT.config, digest: put(config), size: config.length }, layers }));
  const root = { digest: parseDigest(sha256(manifest))!, mediaType: MT.manifest, bytes: manifest };
  return {
    root: async () => root,
    manifest: async () => root,
    blob: async (digest: Digest) => new Blob([new Uint8Array(blobs.get(digest.value)!)]).stream(),
  };
}

const convert = (source: ImageSource, maxMergedEntries: number) =>
  convertImage(source, { store: new MemoryStore(), hasher: nodeHasher, params: { chunkShift: 16, codec: "none" }, platform: "linux/amd64", maxMergedEntries });

describe("the merge limit", () => {
  it("refuses an image whose layers hold more inodes together than it allows, and merges one within it", async () => {
    // Each layer: the root, its directory and 20 files.
    const image = twoLayerImage(20);
    const refused = await convert(image, 43).then(() => null, (err: unknown) => err);
    expect(refused).toBeInstanceOf(LayerFormatError);
    expect((refused as Error).message).toBe("its 2 layers hold 44 entries together, more than the 43 this converter can merge");
    const merged = await convert(image, 44);
    expect(merged.bootstrap.lookup("/l1/f19")).not.toBeNull();
  });

  it("follows from a memory budget, in thousands", () => {
    expect(mergeLimitForMemory(128 * 2 ** 20)).toBe(223_000);
    expect(mergeLimitForMemory(16 * 2 ** 20)).toBe(1000);
  });
});
