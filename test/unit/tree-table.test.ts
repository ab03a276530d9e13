// The converter's columnar tree (src/format/tree-table.ts) encodes to exactly the bytes the FsNode
// encoder writes for the same tree: random layers of every entry kind, names that sort differently
// by UTF-16 and by UTF-8, hardlinks, whiteouts, xattrs, paths given twice, shared chunks.
import { describe, expect, it } from "vitest";
import { createHash } from "node:crypto";
import { LayerTree } from "../../src/convert/layer-tree.ts";
import type { TarEntry } from "../../src/convert/tar.ts";
import { encodeBootstrap } from "../../src/format/encode.ts";
import * as L from "../../src/format/layout.ts";
import { nodeHasher } from "../../src/hash/node.ts";
import { encodeTable } from "../../src/format/encode-table.ts";
import { ChunkTable, treeToNodes } from "../../src/format/tree-table.ts";

const NAMES = ["a", "b", "Z", "z", "lib", "index.js", "é", "😀", "\uffff", "ä", "x.wh", ".wh.b", ".wh.lib", ".wh..wh..opq", "sha256:" + "1".repeat(64)];

function randomLayer(seed: number, count: number): { tree: LayerTree; chunks: ChunkTable } {
  let s = seed;
  const rand = (n: number) => {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    return (s >>> 8) % n;
  };
  const path = () => Array.from({ length: 1 + rand(4) }, () => NAMES[rand(NAMES.length)]).join("/");
  const tree = new LayerTree();
  const chunks = new ChunkTable();
  const types: TarEntry["type"][] = ["file", "file", "file", "dir", "dir", "symlink", "hardlink", "char", "block", "fifo"];
  for (let i = 0; i < count; i++) {
    const type = types[rand(types.length)]!;
    const xattrs = new Map<string, Uint8Array>();
    if (rand(5) === 0) for (const k of ["user.b", "user.a", "security.capability"].slice(rand(3))) xattrs.set(k, new Uint8Array([rand(256), i & 0xff]));
    const entry: TarEntry = {
      path: rand(20) === 0 ? "./" : path(),
      type,
      mode: rand(0o10000),
      uid: rand(3),
      gid: rand(3),
      uname: "",
      gname: "",
      size: 0,
      mtime: 1_700_000_000 + rand(1000) + (rand(2) ? 0.5 : 0),
      mtimeNsec: rand(2) ? 0 : rand(1e9),
      linkName: type === "symlink" ? (rand(2) ? path() : "../t") : type === "hardlink" ? path() : "",
      devMajor: rand(10),
      devMinor: rand(10),
      xattrs,
    };
    const file = tree.add(entry);
    if (file === -1) continue;
    const pieces = rand(3);
    for (let k = 0; k < pieces; k++) {
      const content = `content ${rand(12)}`;
      const digest = new Uint8Array(createHash("sha256").update(content).digest());
      let index = chunks.find(digest);
      if (index === -1) index = chunks.add({ digest, compressed: rand(2) === 0, storedOffset: chunks.storedEnd, storedSize: content.length, size: content.length, uncompressedOffset: chunks.uncompressedEnd });
      tree.table.chunkRefs.set(tree.table.addChunkRef(file), index);
    }
    tree.table.setSize(file, rand(100));
  }
  return { tree, chunks };
}

describe("tree table", () => {
  it("encodes to the FsNode encoder's bytes, for random layers of every kind of entry", () => {
    for (let seed = 1; seed <= 60; seed++) {
      const { tree, chunks } = randomLayer(seed, 20 + seed * 5);
      const blob = { storedSize: chunks.storedEnd, layerDigest: `sha256:${"1".repeat(64)}` };
      const records = chunks.records();
      const root = treeToNodes(tree.table);
      tree.table.seal();
      chunks.seal();
      const bytes = encodeTable({ codec: 1, chunkShift: 16, blob, tree: tree.table, chunks }, nodeHasher);
      // The data digest is the sha256 of the chunk table; the rest is what the FsNode encoder writes.
      // (Read by the layout: these random records are not all valid, so no Bootstrap.decode.)
      const at = L.sectionOffsets(L.readCounts(new DataView(bytes.buffer)));
      const dataDigest = createHash("sha256").update(bytes.subarray(at.chunks, at.chunks + records.length * L.CHUNK_RECORD_SIZE)).digest();
      expect(Buffer.from(bytes.subarray(at.blobs, at.blobs + 32)).equals(dataDigest), `seed ${seed}`).toBe(true);
      const expected = encodeBootstrap({ kind: "layer", codec: 1, chunkShift: 16, platform: "", blobs: [{ ...blob, dataDigest }], chunks: records, root });
      expect(Buffer.from(bytes).equals(expected), `seed ${seed}`).toBe(true);
    }
  });

  it("refuses lookups once sealed, and chunks out of storage order", () => {
    const { tree, chunks } = randomLayer(7, 50);
    tree.table.seal();
    expect(() => tree.table.child(0, 0)).toThrow(/sealed/);
    expect(() => chunks.add({ digest: new Uint8Array(32), compressed: false, storedOffset: chunks.storedEnd + 1, storedSize: 1, size: 1, uncompressedOffset: chunks.uncompressedEnd })).toThrow(/end to end/);
  });
});
