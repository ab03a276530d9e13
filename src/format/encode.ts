// Writes a BootstrapModel as format version 1 bytes. The output depends only on the model: inodes
// are numbered in depth-first order over name-sorted directories, so equal trees encode equally.
import type { Bootstrap } from "./decode.ts";
import * as L from "./layout.ts";
import { compareNames, isValidName, type BootstrapModel, type FsNode } from "./model.ts";

const TYPE_BITS: Record<FsNode["type"], number> = {
  file: L.S_IFREG,
  dir: L.S_IFDIR,
  symlink: L.S_IFLNK,
  char: L.S_IFCHR,
  block: L.S_IFBLK,
  fifo: L.S_IFIFO,
  whiteout: L.S_IFCHR, // overlayfs spells a whiteout as a 0:0 character device; the flag makes it explicit
  "hardlink-ref": L.S_IFREG,
};

/**
 * UTF-8 of `s`. Names are nearly all ASCII, and TextEncoder's call costs more than copying a short
 * name by hand: it was a third of encoding a 9,000-entry tree.
 */
function utf8(s: string, encoder: TextEncoder): Uint8Array {
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c > 0x7f) return encoder.encode(s);
    out[i] = c;
  }
  return out;
}

const SURROGATE = /[\uD800-\uDFFF]/;

class StringTable {
  readonly #encoder = new TextEncoder();
  /** Each string's UTF-8, made once however often it is used (names repeat a lot: `__init__.py`, `LICENSE`). */
  readonly #utf8 = new Map<string, Uint8Array>();
  readonly #offsets = new Map<string, number>();
  readonly #parts: Uint8Array[] = [];
  size = 0;

  utf8(s: string): Uint8Array {
    let bytes = this.#utf8.get(s);
    if (!bytes) this.#utf8.set(s, (bytes = utf8(s, this.#encoder)));
    return bytes;
  }

  /** Adds a string once however often it is used. */
  text(s: string): { offset: number; length: number } {
    const bytes = this.utf8(s);
    const known = this.#offsets.get(s);
    if (known !== undefined) return { offset: known, length: bytes.length };
    this.#offsets.set(s, this.size);
    return this.bytes(bytes);
  }

  bytes(b: Uint8Array): { offset: number; length: number } {
    const offset = this.size;
    this.#parts.push(b);
    this.size += b.length;
    return { offset, length: b.length };
  }

  writeTo(out: Uint8Array, at: number): void {
    for (const p of this.#parts) {
      out.set(p, at);
      at += p.length;
    }
  }
}

export function encodeBootstrap(model: BootstrapModel): Uint8Array {
  if (model.chunkShift < L.MIN_CHUNK_SHIFT || model.chunkShift > L.MAX_CHUNK_SHIFT) throw new Error(`chunk size 2^${model.chunkShift} out of range`);
  if (model.root.type !== "dir") throw new Error("the root must be a directory");
  const strings = new StringTable();

  // Number inodes depth-first; a hardlinked node keeps the number of its first name.
  const order: FsNode[] = [];
  const index = new Map<FsNode, number>();
  const names = new Map<FsNode, [string, FsNode][]>();
  const refs = new Map<FsNode, number>();
  const visit = (node: FsNode) => {
    index.set(node, order.length);
    order.push(node);
    if (node.type !== "dir") return;
    const sorted = [...(node.children ?? new Map<string, FsNode>())];
    let surrogates = false;
    for (const [name] of sorted) {
      if (!isValidName(name)) throw new Error(`invalid entry name ${JSON.stringify(name)}`);
      surrogates ||= SURROGATE.test(name);
    }
    // UTF-8 byte order is code point order, which JavaScript's own string order (by UTF-16 unit)
    // matches unless a surrogate meets a unit above it; names are unique keys, never equal.
    if (surrogates) sorted.sort((a, b) => compareNames(strings.utf8(a[0]), strings.utf8(b[0])));
    else sorted.sort((a, b) => (a[0] < b[0] ? -1 : 1));
    names.set(node, sorted);
    for (const [, child] of sorted) {
      refs.set(child, (refs.get(child) ?? 0) + 1);
      if (child.type === "dir" && index.has(child)) throw new Error("a directory may have only one name");
      if (!index.has(child)) visit(child);
    }
  };
  visit(model.root);

  const blobLayer = model.blobs.map((b) => strings.text(b.layerDigest));
  let direntCount = 0;
  let chunkRefCount = 0;
  let xattrCount = 0;
  for (const node of order) {
    direntCount += names.get(node)?.length ?? 0;
    if (node.type === "file") chunkRefCount += node.chunks.length;
    xattrCount += node.xattrs.size;
  }
  // Strings are interned before the layout is sized, in the order the records will use them.
  const nameRefs = new Map<FsNode, { offset: number; length: number }[]>();
  const targetRefs = new Map<FsNode, { offset: number; length: number }>();
  const xattrRefs = new Map<FsNode, [{ offset: number; length: number }, { offset: number; length: number }][]>();
  for (const node of order) {
    const children = names.get(node);
    if (children) nameRefs.set(node, children.map(([name]) => strings.text(name)));
    if (node.target !== undefined) targetRefs.set(node, strings.text(node.target));
    if (node.xattrs.size) {
      const keys = [...node.xattrs.keys()].sort((a, b) => compareNames(strings.utf8(a), strings.utf8(b)));
      xattrRefs.set(node, keys.map((k) => [strings.text(k), strings.bytes(node.xattrs.get(k)!)]));
    }
  }
  // Last, and never shared: the image of one layer is then that layer's bootstrap with the platform
  // appended (imageOfOneLayer).
  const platform = strings.bytes(strings.utf8(model.platform));

  const counts: L.Counts = {
    blobCount: model.blobs.length,
    inodeCount: order.length,
    direntCount,
    chunkCount: model.chunks.length,
    chunkRefCount,
    xattrCount,
    stringsSize: strings.size,
  };
  const at = L.sectionOffsets(counts);
  const out = new Uint8Array(at.end);
  const view = new DataView(out.buffer);
  const u32 = (o: number, v: number) => view.setUint32(o, v, true);
  const u64 = (o: number, v: number) => view.setBigUint64(o, BigInt(v), true);

  L.writeHeader(out, {
    ...counts,
    kind: model.kind === "layer" ? L.KIND_LAYER : L.KIND_IMAGE,
    codec: model.codec,
    chunkShift: model.chunkShift,
    platformOffset: platform.offset,
    platformLength: platform.length,
  });

  model.blobs.forEach((b, i) => {
    const o = at.blobs + i * L.BLOB_RECORD_SIZE;
    if (b.dataDigest.length !== 32) throw new Error("blob digest must be 32 bytes");
    out.set(b.dataDigest, o);
    u64(o + 32, b.storedSize);
    u32(o + 40, blobLayer[i]!.offset);
    u32(o + 44, blobLayer[i]!.length);
  });

  let dirent = 0;
  let chunkRef = 0;
  let xattr = 0;
  order.forEach((node, i) => {
    const o = at.inodes + i * L.INODE_RECORD_SIZE;
    const isDir = node.type === "dir";
    const nlink = isDir ? 2 + (names.get(node) ?? []).filter(([, c]) => c.type === "dir").length : Math.max(1, refs.get(node) ?? 1);
    u32(o, TYPE_BITS[node.type] | (node.perm & 0o7777));
    u32(o + 4, node.uid);
    u32(o + 8, node.gid);
    u32(o + 12, nlink);
    u64(o + 16, node.type === "symlink" || node.type === "hardlink-ref" ? targetRefs.get(node)!.length : node.type === "file" ? node.size : 0);
    view.setBigInt64(o + 24, BigInt(Math.trunc(node.mtime)), true);
    u32(o + 32, node.mtimeNsec);
    let flags = 0;
    if (node.type === "whiteout") flags |= L.FLAG_WHITEOUT;
    if (node.type === "hardlink-ref") flags |= L.FLAG_HARDLINK_REF;
    if (node.opaque) flags |= L.FLAG_OPAQUE;
    if (node.implicit) flags |= L.FLAG_IMPLICIT;
    u32(o + 36, flags);
    let a = 0;
    let b = 0;
    if (isDir) {
      const children = names.get(node)!;
      const refsForNames = nameRefs.get(node)!;
      a = dirent;
      b = children.length;
      children.forEach(([, child], k) => {
        const d = at.dirents + dirent * L.DIRENT_RECORD_SIZE;
        u32(d, refsForNames[k]!.offset);
        view.setUint16(d + 4, refsForNames[k]!.length, true);
        u32(d + 8, index.get(child)!);
        dirent++;
      });
    } else if (node.type === "file") {
      a = chunkRef;
      b = node.chunks.length;
      for (const c of node.chunks) {
        if (c < 0 || c >= model.chunks.length) throw new Error(`chunk index ${c} out of range`);
        u32(at.chunkRefs + chunkRef * L.CHUNK_REF_SIZE, c);
        chunkRef++;
      }
    } else if (node.type === "symlink" || node.type === "hardlink-ref") {
      const t = targetRefs.get(node);
      if (!t) throw new Error(`${node.type} without a target`);
      a = t.offset;
      b = t.length;
    } else if (node.type === "char" || node.type === "block") {
      a = node.devMajor;
      b = node.devMinor;
    }
    u32(o + 40, a);
    u32(o + 44, b);
    for (const [key, value] of xattrRefs.get(node) ?? []) {
      const x = at.xattrs + xattr * L.XATTR_RECORD_SIZE;
      u32(x, i);
      u32(x + 4, key.offset);
      view.setUint16(x + 8, key.length, true);
      u32(x + 12, value.offset);
      u32(x + 16, value.length);
      xattr++;
    }
  });

  model.chunks.forEach((c, i) => {
    const o = at.chunks + i * L.CHUNK_RECORD_SIZE;
    if (c.digest.length !== 32) throw new Error("chunk digest must be 32 bytes");
    out.set(c.digest, o);
    u32(o + 32, c.blob);
    u32(o + 36, c.compressed ? L.CHUNK_COMPRESSED : 0);
    u64(o + 40, c.storedOffset);
    u32(o + 48, c.storedSize);
    u32(o + 52, c.size);
    u64(o + 56, c.uncompressedOffset);
  });

  strings.writeTo(out, at.strings);
  return out;
}

/** Layer flags that one layer's merge over an empty root drops without changing the tree. */
const UNMERGED_FLAGS = L.FLAG_IMPLICIT | L.FLAG_OPAQUE;

/**
 * The image bootstrap of an image made of this one layer, without merging and encoding again:
 * the layer's bytes with an image header, its inodes' flags cleared and the platform appended to
 * the string table. Byte for byte what `mergeLayers([layer], platform)` (merge.ts) gives,
 * since the encoder puts the platform last. Implicit and opaque directories are no reason to merge:
 * over an empty root, an implicit directory gets the attributes it already has (0755, root, mtime
 * 0) and an opaque one hides nothing. Null when a merge would change the tree: the layer has
 * whiteouts, or links to files of other layers.
 */
export function imageOfOneLayer(layer: Bootstrap, platform: string): Uint8Array | null {
  if (layer.kind !== "layer" || (layer.layerFlags & ~UNMERGED_FLAGS) !== 0 || layer.blobCount !== 1) return null;
  const text = new TextEncoder().encode(platform);
  const out = new Uint8Array(layer.bytes.length + text.length);
  out.set(layer.bytes);
  out.set(text, layer.bytes.length);
  const view = new DataView(out.buffer);
  const stringsSize = view.getUint32(L.H.stringsSize, true);
  out[L.H.kind] = L.KIND_IMAGE;
  view.setUint32(L.H.stringsSize, stringsSize + text.length, true);
  view.setUint32(L.H.platformOffset, stringsSize, true);
  view.setUint32(L.H.platformLength, text.length, true);
  if (layer.layerFlags !== 0) {
    const { inodes } = L.sectionOffsets(L.readCounts(view));
    for (let i = 0; i < layer.inodeCount; i++) view.setUint32(inodes + i * L.INODE_RECORD_SIZE + 36, 0, true); // the flags field
  }
  return out;
}
