// Merges layer bootstraps, bottom first, into one image bootstrap — the rootfs OverlayFS (or GNU
// tar extracting the layers in order with whiteout rules) would present. Layer i's data blob becomes
// blob i of the image; chunk records are concatenated, so merging never touches chunk data.
//
// The image's tree is built in a TreeTable (tree-table.ts), columns of numbers as a layer's
// conversion builds, not an object per entry, and the chunk records are copied from the layers'
// bootstraps as the image is written: so a Worker merges images about as large as the layers it
// converts. A whiteout removes an entry; an opaque directory gets a new, empty inode under its name,
// which leaves what it held unreachable, and the encoder writes only what the root reaches.
import type { Bootstrap, Inode } from "../format/decode.ts";
import { encodeTree, writeChunkRecord } from "../format/encode-table.ts";
import * as L from "../format/layout.ts";
import type { NodeType } from "../format/model.ts";
import { KIND_BLOCK, KIND_CHAR, KIND_DIR, KIND_FIFO, KIND_FILE, KIND_SYMLINK, TreeTable } from "../format/tree-table.ts";
import { pathComponents, SkippedEntries } from "./layer-tree.ts";

export interface MergeResult {
  /** The image bootstrap. */
  bytes: Uint8Array;
  /** Hardlinks whose target no lower layer had. */
  skipped: SkippedEntries;
}

const KINDS: Partial<Record<NodeType, number>> = { file: KIND_FILE, symlink: KIND_SYMLINK, char: KIND_CHAR, block: KIND_BLOCK, fifo: KIND_FIFO };

/** `layers` are layer bootstraps, bottom first. */
export function mergeLayers(layers: readonly Bootstrap[], platform: string): MergeResult {
  const merged = mergeTrees(layers);
  return { bytes: encodeMerged(merged, platform), skipped: merged.skipped };
}

/** The image's tree before it is written (mergeLayers' first half; bench:merge-memory weighs each). */
export interface MergedTree {
  tree: TreeTable;
  layers: readonly Bootstrap[];
  skipped: SkippedEntries;
}

export function mergeTrees(layers: readonly Bootstrap[]): MergedTree {
  const first = layers[0];
  if (!first) throw new Error("an image needs at least one layer");
  const tree = new TreeTable();
  tree.setImplicit(0, false);
  const skipped = new SkippedEntries();
  let chunkBase = 0;
  for (const layer of layers) {
    if (layer.kind !== "layer") throw new Error("only layer bootstraps can be merged");
    if (layer.codec !== first.codec || layer.chunkShift !== first.chunkShift) throw new Error("layers were converted with different parameters");
    if (layer.blobCount !== 1) throw new Error("a layer bootstrap has exactly one data blob");
    applyLayer(tree, layer, chunkBase, skipped);
    chunkBase += layer.chunkCount;
  }
  // Nothing is looked up any more: the lookups' memory is room for the image bootstrap.
  tree.seal();
  return { tree, layers, skipped };
}

/** The image bootstrap: the tree, and the layers' chunk records one layer after another, each naming its layer's blob. */
export function encodeMerged({ tree, layers }: MergedTree, platform: string): Uint8Array {
  const first = layers[0]!;
  const chunks = {
    count: layers.reduce((n, l) => n + l.chunkCount, 0),
    write(out: Uint8Array, view: DataView, at: number) {
      let o = at;
      layers.forEach((layer, blob) => {
        for (let i = 0; i < layer.chunkCount; i++, o += L.CHUNK_RECORD_SIZE) {
          const r = layer.chunk(i);
          writeChunkRecord(out, view, o, r.digest, blob, r.compressed, r.storedOffset, r.storedSize, r.size, r.uncompressedOffset);
        }
      });
    },
  };
  const blobs = layers.map((l) => l.blob(0));
  return encodeTree({ kind: L.KIND_IMAGE, codec: first.codec, chunkShift: first.chunkShift, blobs, platform, tree, chunks });
}

/** Lays one layer over the image's tree; its chunk `i` is the image's `chunkBase + i`. */
function applyLayer(tree: TreeTable, layer: Bootstrap, chunkBase: number, skipped: SkippedEntries): void {
  // The image's inode of each of the layer's files, made once whatever its number of names:
  // hardlinks inside the layer stay one inode.
  const taken = new Int32Array(layer.inodeCount).fill(-1);
  const take = (src: number, ino: Inode): number => {
    if (taken[src] !== -1) return taken[src]!;
    const node = tree.newInode(KINDS[ino.type]!, ino.mode);
    setMetadata(tree, node, layer, ino);
    if (ino.type === "file") {
      tree.setSize(node, ino.size);
      tree.beginChunks(node);
      for (const c of layer.chunkIndexes(src)) tree.chunkRefs.set(tree.addChunkRef(node), chunkBase + c);
    } else if (ino.type === "symlink") {
      tree.setTarget(node, layer.readlink(src));
    } else if (ino.type === "char" || ino.type === "block") {
      tree.setDevice(node, ino.devMajor, ino.devMinor);
    }
    return (taken[src] = node);
  };

  /** Applies the layer's directory `src` to the image's `dst`, named `name` in `parent` (-1 for the root). */
  const apply = (dst: number, src: number, parent: number, name: number, path: string): void => {
    if (layer.inode(src).flags & L.FLAG_OPAQUE) dst = emptied(tree, dst, parent, name);
    const entries = layer.readdir(src);
    // Whiteouts first. Each pass decodes the inodes it needs again rather than holding them: a
    // directory may have a hundred thousand entries, and a Worker merges within its memory.
    for (const e of entries) {
      if (layer.inode(e.inode).type !== "whiteout") continue;
      const id = tree.names.lookup(e.name);
      if (id !== -1) tree.unlink(dst, id);
    }
    for (const e of entries) {
      const ino = layer.inode(e.inode);
      if (ino.type === "whiteout") continue;
      const id = tree.names.intern(e.name);
      if (ino.type === "dir") {
        let d = tree.child(dst, id);
        if (d === -1 || tree.kind(d) !== KIND_DIR) {
          d = tree.newInode(KIND_DIR, 0o755);
          tree.link(dst, id, d);
        }
        if (!(ino.flags & L.FLAG_IMPLICIT)) setMetadata(tree, d, layer, ino);
        apply(d, e.inode, dst, id, `${path}/${e.name}`);
      } else if (ino.type === "hardlink-ref") {
        const target = find(tree, layer.readlink(e.inode));
        if (target !== -1 && tree.kind(target) !== KIND_DIR) tree.link(dst, id, target);
        else skipped.add(`${path}/${e.name}`, `hardlink target /${layer.readlink(e.inode)} is not a file in a lower layer`);
      } else {
        tree.link(dst, id, take(e.inode, ino));
      }
    }
  };
  const root = layer.inode(0);
  if (!(root.flags & L.FLAG_IMPLICIT)) setMetadata(tree, 0, layer, root);
  apply(0, 0, -1, -1, "");
}

/**
 * `dir` with nothing under it: a new inode with its attributes, named as it was, so that what it
 * held is no longer reachable. The root keeps its inode (0): its entries are removed one by one.
 */
function emptied(tree: TreeTable, dir: number, parent: number, name: number): number {
  if (parent === -1) {
    for (let e = 0; e < tree.entryCount; e++) if (tree.entryParent(e) === 0) tree.unlink(0, tree.entryName(e));
    return dir;
  }
  const fresh = tree.newInode(KIND_DIR, tree.perm(dir));
  tree.setMetadata(fresh, { perm: tree.perm(dir), uid: tree.uid(dir), gid: tree.gid(dir), mtime: tree.mtime(dir), mtimeNsec: tree.mtimeNsec(dir), xattrs: new Map() });
  const xattrs = tree.xattrs.get(dir);
  if (xattrs) tree.xattrs.set(fresh, xattrs);
  tree.link(parent, name, fresh);
  return fresh;
}

function setMetadata(tree: TreeTable, node: number, layer: Bootstrap, ino: Inode): void {
  tree.setMetadata(node, { perm: ino.mode, uid: ino.uid, gid: ino.gid, mtime: ino.mtime, mtimeNsec: ino.mtimeNsec, xattrs: layer.xattrs(ino.index) });
}

/** The image's inode at `path` (not the root), or -1. */
function find(tree: TreeTable, path: string): number {
  let node = 0;
  for (const part of pathComponents(path) ?? []) {
    if (tree.kind(node) !== KIND_DIR) return -1;
    const id = tree.names.lookup(part);
    node = id === -1 ? -1 : tree.child(node, id);
    if (node === -1) return -1;
  }
  return node === 0 ? -1 : node;
}
