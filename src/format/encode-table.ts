// Writes a TreeTable (tree-table.ts) as format version 1 bytes: a layer's with its ChunkTable, or an
// image's that merge.ts built. The same bytes encodeBootstrap (encode.ts) writes for the equal FsNode
// tree: inodes numbered depth first over name-sorted directories, strings in the order the records
// first use them, each distinct one once, the platform last. Only typed arrays are made on the way,
// a few bytes per inode, so the peak stays close to the table plus the bootstrap itself.
import * as L from "./layout.ts";
import { fromHex, hashBytes, type HasherFactory } from "../hash/hasher.ts";
import type { BlobRef } from "./model.ts";
import { KIND_BLOCK, KIND_CHAR, KIND_DIR, KIND_FIFO, KIND_FILE, KIND_HARDLINK_REF, KIND_SYMLINK, KIND_WHITEOUT, REMOVED, type ChunkTable, type TreeTable } from "./tree-table.ts";

const TYPE_BITS: number[] = [];
TYPE_BITS[KIND_FILE] = L.S_IFREG;
TYPE_BITS[KIND_DIR] = L.S_IFDIR;
TYPE_BITS[KIND_SYMLINK] = L.S_IFLNK;
TYPE_BITS[KIND_CHAR] = L.S_IFCHR;
TYPE_BITS[KIND_BLOCK] = L.S_IFBLK;
TYPE_BITS[KIND_FIFO] = L.S_IFIFO;
TYPE_BITS[KIND_WHITEOUT] = L.S_IFCHR; // as overlayfs spells a whiteout; the flag makes it explicit
TYPE_BITS[KIND_HARDLINK_REF] = L.S_IFREG;

export interface LayerTables {
  codec: number;
  chunkShift: number;
  /** The data digest follows from the chunk table: encodeTable writes it. */
  blob: Omit<BlobRef, "dataDigest">;
  tree: TreeTable;
  chunks: ChunkTable;
}

/** The chunk table of a bootstrap: how many records, and how to write them at `at`. */
export interface ChunkRecords {
  count: number;
  write(out: Uint8Array, view: DataView, at: number): void;
}

/**
 * A layer bootstrap (kind layer, one blob, no platform) of the tables. Its blob's data digest is the
 * sha256 of its chunk table (docs/format.md), written once the table is: the records name each
 * stored chunk by the digest of its content, its place, size and codec flag, and the codec's output
 * is fixed (codec.ts), so they determine the blob's bytes; a second sha256 over the whole blob, as
 * long as the layer's content, would add nothing but a third of the hashing.
 */
export function encodeTable({ codec, chunkShift, blob, tree, chunks }: LayerTables, hasher: HasherFactory): Uint8Array {
  const out = encodeTree({ kind: L.KIND_LAYER, codec, chunkShift, blobs: [{ ...blob, dataDigest: new Uint8Array(32) }], platform: "", tree, chunks: layerChunkRecords(chunks) });
  const at = L.sectionOffsets(L.readCounts(new DataView(out.buffer)));
  const chunkTable = out.subarray(at.chunks, at.chunks + chunks.count * L.CHUNK_RECORD_SIZE);
  out.set(fromHex(hashBytes(hasher, "sha256", chunkTable)), at.blobs);
  return out;
}

/**
 * A bootstrap of `tree` from its root (inodes no entry reaches, and removed entries, are left
 * out), with these blobs and chunk records: a layer's, or an image's that merge.ts made.
 */
export function encodeTree({ kind, codec, chunkShift, blobs, platform, tree, chunks }: { kind: typeof L.KIND_LAYER | typeof L.KIND_IMAGE; codec: number; chunkShift: number; blobs: BlobRef[]; platform: string; tree: TreeTable; chunks: ChunkRecords }): Uint8Array {
  if (chunkShift < L.MIN_CHUNK_SHIFT || chunkShift > L.MAX_CHUNK_SHIFT) throw new Error(`chunk size 2^${chunkShift} out of range`);
  for (const blob of blobs) if (blob.dataDigest.length !== 32) throw new Error("blob digest must be 32 bytes");
  const names = tree.names;
  const nodeCount = tree.inodeCount;
  const entryCount = tree.entryCount;

  // Each directory's entries, grouped by parent (counting sort), then sorted by name bytes.
  const firstEntry = new Uint32Array(nodeCount + 1);
  let liveEntries = 0;
  for (let e = 0; e < entryCount; e++) {
    if (tree.entryChild(e) === REMOVED) continue;
    firstEntry[tree.entryParent(e) + 1]!++;
    liveEntries++;
  }
  for (let i = 0; i < nodeCount; i++) firstEntry[i + 1]! += firstEntry[i]!;
  const byParent = new Uint32Array(liveEntries);
  const fill = firstEntry.slice(0, nodeCount);
  for (let e = 0; e < entryCount; e++) if (tree.entryChild(e) !== REMOVED) byParent[fill[tree.entryParent(e)]!++] = e;
  const byName = (x: number, y: number) => names.compare(tree.entryName(x), tree.entryName(y));
  for (let i = 0; i < nodeCount; i++) {
    if (firstEntry[i + 1]! - firstEntry[i]! > 1) byParent.subarray(firstEntry[i]!, firstEntry[i + 1]!).sort(byName);
  }

  // Inodes numbered depth first from the root; a hardlinked inode keeps the number of its first name.
  const index = new Int32Array(nodeCount).fill(-1);
  const order = new Uint32Array(nodeCount);
  const nameCount = new Uint32Array(nodeCount);
  let inodeCount = 0;
  let direntCount = 0;
  let chunkRefCount = 0;
  let xattrCount = 0;
  const visit = (node: number) => {
    index[node] = inodeCount;
    order[inodeCount++] = node;
    const kind = tree.kind(node);
    if (kind === KIND_FILE) chunkRefCount += tree.b(node);
    xattrCount += tree.xattrs.get(node)?.size ?? 0;
    if (kind !== KIND_DIR) return;
    for (let k = firstEntry[node]!; k < firstEntry[node + 1]!; k++) {
      const child = tree.entryChild(byParent[k]!);
      direntCount++;
      nameCount[child]!++;
      if (index[child] === -1) visit(child);
      else if (tree.kind(child) === KIND_DIR) throw new Error("a directory may have only one name");
    }
  };
  visit(0);

  // String offsets, given in the order the records first use the strings.
  const stringAt = new Int32Array(names.count).fill(-1);
  let stringsSize = 0;
  const pieces: (number | Uint8Array)[] = []; // name ids and xattr values, in table order
  const text = (id: number): number => {
    if (stringAt[id] === -1) {
      stringAt[id] = stringsSize;
      stringsSize += names.length(id);
      pieces.push(id);
    }
    return stringAt[id]!;
  };
  // The layer digests come first, each text once; a name with the same text (a tar may have one) uses it.
  const encoder = new TextEncoder();
  const layerAt = new Map<string, number>();
  const layerLength: number[] = [];
  for (const blob of blobs) {
    const layerText = encoder.encode(blob.layerDigest);
    layerLength.push(layerText.length);
    if (layerAt.has(blob.layerDigest)) continue;
    layerAt.set(blob.layerDigest, stringsSize);
    const layerId = names.lookupBytes(layerText);
    if (layerId !== -1) stringAt[layerId] = stringsSize;
    stringsSize += layerText.length;
    pieces.push(layerText);
  }
  const xattrKeys = new Map<number, number[]>();
  const valueAt: number[] = []; // in the order the xattr records are written
  for (let n = 0; n < inodeCount; n++) {
    const node = order[n]!;
    const kind = tree.kind(node);
    if (kind === KIND_DIR) for (let k = firstEntry[node]!; k < firstEntry[node + 1]!; k++) text(tree.entryName(byParent[k]!));
    if (kind === KIND_SYMLINK || kind === KIND_HARDLINK_REF) text(tree.a(node));
    const xattrs = tree.xattrs.get(node);
    if (xattrs) {
      const keys = [...xattrs.keys()].sort((x, y) => names.compare(x, y));
      xattrKeys.set(node, keys);
      for (const key of keys) {
        text(key);
        const value = xattrs.get(key)!;
        valueAt.push(stringsSize);
        stringsSize += value.length;
        pieces.push(value);
      }
    }
  }
  // Last, and never shared (a layer's is empty): see imageOfOneLayer.
  const platformText = encoder.encode(platform);
  const platformAt = stringsSize;
  stringsSize += platformText.length;
  pieces.push(platformText);

  const counts: L.Counts = { blobCount: blobs.length, inodeCount, direntCount, chunkCount: chunks.count, chunkRefCount, xattrCount, stringsSize };
  const at = L.sectionOffsets(counts);
  const out = new Uint8Array(at.end);
  const view = new DataView(out.buffer);
  const u32 = (o: number, v: number) => view.setUint32(o, v, true);
  const u64 = (o: number, v: number) => view.setBigUint64(o, BigInt(v), true);

  L.writeHeader(out, { ...counts, kind, codec, chunkShift, platformOffset: platformAt, platformLength: platformText.length });

  blobs.forEach((blob, i) => {
    const o = at.blobs + i * L.BLOB_RECORD_SIZE;
    out.set(blob.dataDigest, o);
    u64(o + 32, blob.storedSize);
    u32(o + 40, layerAt.get(blob.layerDigest)!);
    u32(o + 44, layerLength[i]!);
  });

  let dirent = 0;
  let chunkRef = 0;
  let xattr = 0;
  for (let n = 0; n < inodeCount; n++) {
    const node = order[n]!;
    const o = at.inodes + n * L.INODE_RECORD_SIZE;
    const kind = tree.kind(node);
    let a = 0;
    let b = 0;
    let nlink = Math.max(1, nameCount[node]!);
    let size = 0;
    if (kind === KIND_DIR) {
      a = dirent;
      b = firstEntry[node + 1]! - firstEntry[node]!;
      nlink = 2;
      for (let k = firstEntry[node]!; k < firstEntry[node + 1]!; k++) {
        const e = byParent[k]!;
        const child = tree.entryChild(e);
        if (tree.kind(child) === KIND_DIR) nlink++;
        const d = at.dirents + dirent * L.DIRENT_RECORD_SIZE;
        u32(d, stringAt[tree.entryName(e)]!);
        view.setUint16(d + 4, names.length(tree.entryName(e)), true);
        u32(d + 8, index[child]!);
        dirent++;
      }
    } else if (kind === KIND_FILE) {
      a = chunkRef;
      b = tree.b(node);
      size = tree.size(node);
      for (let k = tree.a(node), end = k + b; k < end; k++) {
        const c = tree.chunkRefs.get(k);
        if (c >= chunks.count) throw new Error(`chunk index ${c} out of range`);
        u32(at.chunkRefs + chunkRef * L.CHUNK_REF_SIZE, c);
        chunkRef++;
      }
    } else if (kind === KIND_SYMLINK || kind === KIND_HARDLINK_REF) {
      a = stringAt[tree.a(node)]!;
      b = names.length(tree.a(node));
      size = b;
    } else if (kind === KIND_CHAR || kind === KIND_BLOCK) {
      a = tree.a(node);
      b = tree.b(node);
    }
    u32(o, TYPE_BITS[kind]! | tree.perm(node));
    u32(o + 4, tree.uid(node));
    u32(o + 8, tree.gid(node));
    u32(o + 12, nlink);
    u64(o + 16, size);
    view.setBigInt64(o + 24, BigInt(Math.trunc(tree.mtime(node))), true);
    u32(o + 32, tree.mtimeNsec(node));
    let flags = 0;
    if (kind === KIND_WHITEOUT) flags |= L.FLAG_WHITEOUT;
    if (kind === KIND_HARDLINK_REF) flags |= L.FLAG_HARDLINK_REF;
    if (tree.opaque(node)) flags |= L.FLAG_OPAQUE;
    if (tree.implicit(node)) flags |= L.FLAG_IMPLICIT;
    u32(o + 36, flags);
    u32(o + 40, a);
    u32(o + 44, b);
    const keys = xattrKeys.get(node);
    if (keys) {
      const xattrs = tree.xattrs.get(node)!;
      for (const key of keys) {
        const value = xattrs.get(key)!;
        const x = at.xattrs + xattr * L.XATTR_RECORD_SIZE;
        u32(x, n);
        u32(x + 4, stringAt[key]!);
        view.setUint16(x + 8, names.length(key), true);
        u32(x + 12, valueAt[xattr]!);
        u32(x + 16, value.length);
        xattr++;
      }
    }
  }

  chunks.write(out, view, at.chunks);

  let s = at.strings;
  const arena = names.bytes;
  for (const p of pieces) {
    if (typeof p === "number") {
      const start = names.start(p);
      const length = names.length(p);
      out.set(arena.subarray(start, start + length), s);
      s += length;
    } else {
      out.set(p, s);
      s += p.length;
    }
  }
  return out;
}

/** A layer's chunk records: blob 0, laid end to end. */
function layerChunkRecords(chunks: ChunkTable): ChunkRecords {
  return {
    count: chunks.count,
    write(out, view, at) {
      let storedOffset = 0;
      let uncompressedOffset = 0;
      for (let i = 0; i < chunks.count; i++) {
        const [page, from] = chunks.digest(i);
        writeChunkRecord(out, view, at + i * L.CHUNK_RECORD_SIZE, page.subarray(from, from + 32), 0, chunks.compressed(i), storedOffset, chunks.storedSize(i), chunks.size(i), uncompressedOffset);
        storedOffset += chunks.storedSize(i);
        uncompressedOffset += chunks.size(i);
      }
    },
  };
}

/** One chunk record at `o` (the fields of a ChunkRecord, without an object per record). */
export function writeChunkRecord(out: Uint8Array, view: DataView, o: number, digest: Uint8Array, blob: number, compressed: boolean, storedOffset: number, storedSize: number, size: number, uncompressedOffset: number): void {
  out.set(digest, o);
  view.setUint32(o + 32, blob, true);
  view.setUint32(o + 36, compressed ? L.CHUNK_COMPRESSED : 0, true);
  view.setBigUint64(o + 40, BigInt(storedOffset), true);
  view.setUint32(o + 48, storedSize, true);
  view.setUint32(o + 52, size, true);
  view.setBigUint64(o + 56, BigInt(uncompressedOffset), true);
}
