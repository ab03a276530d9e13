// A layer's file tree and chunk table as the converter builds them while a layer streams: columns
// of numbers in typed arrays, not an object per entry. An FsNode (model.ts) costs about a kilobyte
// with its maps, arrays and strings; here an inode is 40 bytes, a directory entry 12 plus its slot
// in a hash table, a chunk 41 plus its slot, and each distinct name is stored once as UTF-8. So a
// layer of a few hundred thousand files converts within a Worker's 128 MB. encodeTable
// (encode-table.ts) writes it as the same bytes encodeBootstrap writes for the equal FsNode tree.
import type { ChunkRecord, FsNode, NodeType } from "./model.ts";
import { f64Column, PagedArray, u32Column } from "../util/paged-array.ts";

export const KIND_FILE = 1;
export const KIND_DIR = 2;
export const KIND_SYMLINK = 3;
export const KIND_CHAR = 4;
export const KIND_BLOCK = 5;
export const KIND_FIFO = 6;
export const KIND_WHITEOUT = 7;
export const KIND_HARDLINK_REF = 8;

// An inode's `info`: permission bits, its kind, and the layer flags.
const PERM_MASK = 0o7777;
const KIND_SHIFT = 12;
const KIND_MASK = 0xf << KIND_SHIFT;
const OPAQUE = 1 << 16;
const IMPLICIT = 1 << 17;

/** An open-addressed hash table of element ids (stored +1, 0 = empty) that doubles at half full. */
class IdHash {
  slots = new Int32Array(1024);
  count = 0;

  /** The slot for `hash` where `matches` holds or that is empty. */
  probe(hash: number, matches: (id: number) => boolean): number {
    if (this.slots.length === 0) throw new Error("the table was sealed: nothing can be looked up or added");
    const mask = this.slots.length - 1;
    for (let s = hash & mask; ; s = (s + 1) & mask) {
      const v = this.slots[s]!;
      if (v === 0 || matches(v - 1)) return s;
    }
  }

  /** Gives the slots' memory back; the ids stay where they are. */
  release(): void {
    this.slots = new Int32Array(0);
  }

  /** Puts `id` in the empty slot `s`, growing the table (rehashing every id by `hashOf`) past half full. */
  fill(s: number, id: number, hashOf: (id: number) => number): void {
    this.slots[s] = id + 1;
    if (++this.count * 2 <= this.slots.length) return;
    const old = this.slots;
    this.slots = new Int32Array(old.length * 2);
    const mask = this.slots.length - 1;
    for (const v of old) {
      if (v === 0) continue;
      let t = hashOf(v - 1) & mask;
      while (this.slots[t] !== 0) t = (t + 1) & mask;
      this.slots[t] = v;
    }
  }
}

/**
 * A random seed for one table's hashes. Names, paths and chunk contents come from whoever pushed the
 * image: unseeded, they could be chosen to collide, and every insert would probe the same run of
 * slots (a layer's conversion quadratic in its entries). Drawn per table, as a Worker may not draw
 * random numbers at module scope.
 */
function randomSeed(): number {
  return crypto.getRandomValues(new Uint32Array(1))[0]!;
}

/** murmur3's finaliser over `h` and the seed: every output bit depends on every input bit. */
function mix(h: number, seed: number): number {
  h = (h ^ seed) >>> 0;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** FNV-1a from a seeded basis, mixed: bytes that collide under one seed need not under another. */
function hashBytes(bytes: Uint8Array, start: number, end: number, seed: number): number {
  let h = 0x811c9dc5 ^ seed;
  for (let i = start; i < end; i++) h = Math.imul(h ^ bytes[i]!, 0x01000193);
  return mix(h, seed);
}

/** Distinct byte strings (names, link targets, xattr names), each stored once in one growing buffer. */
export class NameArena {
  #bytes = new Uint8Array(64 * 1024);
  #used = 0;
  readonly #starts = u32Column();
  readonly #hash = new IdHash();
  readonly #seed = randomSeed();
  readonly #encoder = new TextEncoder();
  #scratch = new Uint8Array(1024);

  get count(): number {
    return this.#starts.length;
  }

  get bytes(): Uint8Array {
    return this.#bytes;
  }

  start(id: number): number {
    return this.#starts.get(id);
  }

  length(id: number): number {
    return (id + 1 < this.#starts.length ? this.#starts.get(id + 1) : this.#used) - this.#starts.get(id);
  }

  /** The id of `s`, adding it if new. */
  intern(s: string): number {
    const n = this.#utf8(s);
    return this.#find(n, true);
  }

  /** The id of `s`, or -1 when it was never added. */
  lookup(s: string): number {
    return this.#find(this.#utf8(s), false);
  }

  /** The id of these bytes, or -1 when they were never added. */
  lookupBytes(bytes: Uint8Array): number {
    if (this.#scratch.length < bytes.length) this.#scratch = new Uint8Array(bytes.length);
    this.#scratch.set(bytes);
    return this.#find(bytes.length, false);
  }

  /** Byte order of the UTF-8 of two ids (the order of directory entries and xattr names). */
  compare(a: number, b: number): number {
    if (a === b) return 0;
    const bytes = this.#bytes;
    const sa = this.start(a);
    const sb = this.start(b);
    const la = this.length(a);
    const lb = this.length(b);
    const n = Math.min(la, lb);
    for (let i = 0; i < n; i++) {
      const d = bytes[sa + i]! - bytes[sb + i]!;
      if (d !== 0) return d;
    }
    return la - lb;
  }

  /** Writes `s` as UTF-8 into the scratch buffer, returning its length. */
  #utf8(s: string): number {
    if (this.#scratch.length < s.length * 3) this.#scratch = new Uint8Array(s.length * 3);
    const out = this.#scratch;
    for (let i = 0; i < s.length; i++) {
      const c = s.charCodeAt(i);
      if (c > 0x7f) return this.#encoder.encodeInto(s, out).written;
      out[i] = c;
    }
    return s.length;
  }

  #find(n: number, add: boolean): number {
    const scratch = this.#scratch;
    const bytes = () => this.#bytes;
    const s = this.#hash.probe(hashBytes(scratch, 0, n, this.#seed), (id) => {
      if (this.length(id) !== n) return false;
      const b = bytes();
      const at = this.start(id);
      for (let i = 0; i < n; i++) if (b[at + i] !== scratch[i]) return false;
      return true;
    });
    const found = this.#hash.slots[s]!;
    if (found !== 0) return found - 1;
    if (!add) return -1;
    if (this.#used + n > this.#bytes.length) {
      const grown = new Uint8Array(Math.max(this.#used + n, Math.ceil(this.#bytes.length * 1.5)));
      grown.set(this.#bytes.subarray(0, this.#used));
      this.#bytes = grown;
    }
    this.#bytes.set(scratch.subarray(0, n), this.#used);
    const id = this.#starts.push(this.#used);
    this.#used += n;
    this.#hash.fill(s, id, (i) => hashBytes(this.#bytes, this.start(i), this.start(i) + this.length(i), this.#seed));
    return id;
  }
}

/** The child of an entry that was removed (a whiteout, when layers are merged): it names nothing. */
export const REMOVED = 0xffffffff;

/**
 * Inodes and directory entries. Inode 0 is the root directory. A directory entry names a child
 * inode under a parent; a hardlink is a second entry naming the same inode. An entry's child may be
 * replaced (a later tar entry of the same path), or removed (its child set to REMOVED).
 */
export class TreeTable {
  readonly names = new NameArena();
  // Inode columns.
  readonly #info = u32Column();
  readonly #uid = u32Column();
  readonly #gid = u32Column();
  readonly #mtime = f64Column();
  readonly #nsec = u32Column();
  readonly #size = f64Column();
  /** Directory: unused; file: first chunk reference; symlink, hardlink reference: target name id; device: major. */
  readonly #a = u32Column();
  /** File: chunk count; device: minor. */
  readonly #b = u32Column();
  // Directory entry columns.
  readonly #parent = u32Column();
  readonly #name = u32Column();
  readonly #child = u32Column();
  readonly #entries = new IdHash();
  readonly #seed = randomSeed();
  /** Every file's chunk record indexes, each file's contiguous, in the order they were cut. */
  readonly chunkRefs = u32Column();
  /** Extended attributes of the few inodes that have any: name id → value. */
  readonly xattrs = new Map<number, Map<number, Uint8Array>>();

  constructor() {
    this.newInode(KIND_DIR, 0o755);
    this.setImplicit(0, true);
  }

  get inodeCount(): number {
    return this.#info.length;
  }

  get entryCount(): number {
    return this.#parent.length;
  }

  /**
   * Ends building: the lookup of entries by name is given back (a few bytes per entry), before the
   * encoder needs room for the bootstrap.
   */
  seal(): void {
    this.#entries.release();
  }

  newInode(kind: number, perm: number): number {
    const i = this.#info.push((perm & PERM_MASK) | (kind << KIND_SHIFT));
    this.#uid.grow();
    this.#gid.grow();
    this.#mtime.grow();
    this.#nsec.grow();
    this.#size.grow();
    this.#a.grow();
    this.#b.grow();
    return i;
  }

  kind(i: number): number {
    return (this.#info.get(i) & KIND_MASK) >>> KIND_SHIFT;
  }
  perm(i: number): number {
    return this.#info.get(i) & PERM_MASK;
  }
  opaque(i: number): boolean {
    return (this.#info.get(i) & OPAQUE) !== 0;
  }
  implicit(i: number): boolean {
    return (this.#info.get(i) & IMPLICIT) !== 0;
  }
  uid(i: number): number {
    return this.#uid.get(i);
  }
  gid(i: number): number {
    return this.#gid.get(i);
  }
  mtime(i: number): number {
    return this.#mtime.get(i);
  }
  mtimeNsec(i: number): number {
    return this.#nsec.get(i);
  }
  size(i: number): number {
    return this.#size.get(i);
  }
  a(i: number): number {
    return this.#a.get(i);
  }
  b(i: number): number {
    return this.#b.get(i);
  }

  setOpaque(i: number, on: boolean): void {
    const v = this.#info.get(i);
    this.#info.set(i, on ? v | OPAQUE : v & ~OPAQUE);
  }
  setImplicit(i: number, on: boolean): void {
    const v = this.#info.get(i);
    this.#info.set(i, on ? v | IMPLICIT : v & ~IMPLICIT);
  }
  /** The attributes a tar entry describes; its xattrs replace the inode's. */
  setMetadata(i: number, m: { perm: number; uid: number; gid: number; mtime: number; mtimeNsec: number; xattrs: Map<string, Uint8Array> }): void {
    this.#info.set(i, (this.#info.get(i) & ~PERM_MASK) | (m.perm & PERM_MASK));
    this.#uid.set(i, m.uid);
    this.#gid.set(i, m.gid);
    this.#mtime.set(i, m.mtime);
    this.#nsec.set(i, m.mtimeNsec);
    if (m.xattrs.size === 0) this.xattrs.delete(i);
    else this.xattrs.set(i, new Map([...m.xattrs].map(([k, v]) => [this.names.intern(k), v])));
  }
  setSize(i: number, size: number): void {
    this.#size.set(i, size);
  }
  /** A symlink's or hardlink reference's target; its size is the target's length in bytes. */
  setTarget(i: number, target: string): void {
    const id = this.names.intern(target);
    this.#a.set(i, id);
    this.#size.set(i, this.names.length(id));
  }
  setDevice(i: number, major: number, minor: number): void {
    this.#a.set(i, major);
    this.#b.set(i, minor);
  }

  /** Starts a regular file's chunk list: its chunks must be added before any other file's. */
  beginChunks(i: number): void {
    this.#a.set(i, this.chunkRefs.length);
    this.#b.set(i, 0);
  }
  /** Adds a chunk reference to the file being cut; returns its slot, to be set once the chunk's record is known. */
  addChunkRef(i: number): number {
    this.#b.set(i, this.#b.get(i) + 1);
    return this.chunkRefs.push(0xffffffff);
  }

  #entryHash(parent: number, name: number): number {
    return mix(Math.imul(parent, 0x9e3779b1) ^ Math.imul(name + 1, 0x85ebca77), this.#seed);
  }

  #entrySlot(parent: number, name: number): number {
    return this.#entries.probe(this.#entryHash(parent, name), (e) => this.#parent.get(e) === parent && this.#name.get(e) === name);
  }

  /** The inode named `name` in directory `parent`, or -1. */
  child(parent: number, name: number): number {
    const e = this.#entries.slots[this.#entrySlot(parent, name)]!;
    const child = e === 0 ? REMOVED : this.#child.get(e - 1);
    return child === REMOVED ? -1 : child;
  }

  /** Removes `parent`'s entry `name`, if it has one. */
  unlink(parent: number, name: number): void {
    const e = this.#entries.slots[this.#entrySlot(parent, name)]!;
    if (e !== 0) this.#child.set(e - 1, REMOVED);
  }

  /** Names `child` in `parent` as `name`, replacing what the name named before. */
  link(parent: number, name: number, child: number): void {
    const s = this.#entrySlot(parent, name);
    const e = this.#entries.slots[s]!;
    if (e !== 0) {
      this.#child.set(e - 1, child);
      return;
    }
    const id = this.#parent.push(parent);
    this.#name.push(name);
    this.#child.push(child);
    this.#entries.fill(s, id, (d) => this.#entryHash(this.#parent.get(d), this.#name.get(d)));
  }

  entryParent(e: number): number {
    return this.#parent.get(e);
  }
  entryName(e: number): number {
    return this.#name.get(e);
  }
  /** The entry's inode, or REMOVED. */
  entryChild(e: number): number {
    return this.#child.get(e);
  }
}

/**
 * Chunk records of one data blob (blob 0), in storage order, found again by digest. They are laid
 * end to end in the blob, in both its stored and its uncompressed address space, so their offsets
 * are not kept: each is the sum of the sizes before it.
 */
export class ChunkTable {
  readonly #digests = new PagedArray((n) => new Uint8Array(n), 32);
  #storedEnd = 0;
  #uncompressedEnd = 0;
  readonly #storedSize = u32Column();
  readonly #size = u32Column();
  readonly #compressed = new PagedArray((n) => new Uint8Array(n));
  readonly #hash = new IdHash();
  readonly #seed = randomSeed();

  get count(): number {
    return this.#size.length;
  }

  #hashOf(page: Uint8Array, at: number): number {
    // A sha256 is uniformly distributed, but a pusher can grind contents whose digests share low
    // bits: four bytes, mixed with the seed, spread them again.
    return mix(page[at]! | (page[at + 1]! << 8) | (page[at + 2]! << 16) | (page[at + 3]! << 24), this.#seed);
  }

  #slot(digest: Uint8Array): number {
    return this.#hash.probe(this.#hashOf(digest, 0), (i) => {
      const [page, at] = this.#digests.slot(i);
      for (let k = 0; k < 32; k++) if (page[at + k] !== digest[k]) return false;
      return true;
    });
  }

  /** The index of the chunk with this digest, or -1. */
  find(digest: Uint8Array): number {
    return this.#hash.slots[this.#slot(digest)]! - 1;
  }

  /** Ends adding: the lookup by digest is given back (see TreeTable.seal). */
  seal(): void {
    this.#hash.release();
  }

  /** Adds the next chunk of the blob, stored right after the one before. */
  add(r: Omit<ChunkRecord, "blob">): number {
    if (r.storedOffset !== this.#storedEnd || r.uncompressedOffset !== this.#uncompressedEnd) throw new Error("chunks are added in the order they are stored, end to end");
    const s = this.#slot(r.digest);
    if (this.#hash.slots[s] !== 0) throw new Error("chunk already in the table");
    const i = this.#digests.grow();
    const [page, at] = this.#digests.slot(i);
    page.set(r.digest, at);
    this.#storedEnd += r.storedSize;
    this.#uncompressedEnd += r.size;
    this.#storedSize.push(r.storedSize);
    this.#size.push(r.size);
    this.#compressed.push(r.compressed ? 1 : 0);
    this.#hash.fill(s, i, (k) => this.#hashOf(...this.#digests.slot(k)));
    return i;
  }

  digest(i: number): [page: Uint8Array, at: number] {
    return this.#digests.slot(i);
  }
  /** Where the next chunk goes, in the stored and the uncompressed address space of the blob. */
  get storedEnd(): number {
    return this.#storedEnd;
  }
  get uncompressedEnd(): number {
    return this.#uncompressedEnd;
  }
  storedSize(i: number): number {
    return this.#storedSize.get(i);
  }
  size(i: number): number {
    return this.#size.get(i);
  }
  compressed(i: number): boolean {
    return this.#compressed.get(i) === 1;
  }

  /** Every record, as objects (a checkpoint's). */
  records(): ChunkRecord[] {
    const out: ChunkRecord[] = [];
    let storedOffset = 0;
    let uncompressedOffset = 0;
    for (let i = 0; i < this.count; i++) {
      const [page, at] = this.digest(i);
      out.push({ digest: page.slice(at, at + 32), blob: 0, compressed: this.compressed(i), storedOffset, storedSize: this.storedSize(i), size: this.size(i), uncompressedOffset });
      storedOffset += this.storedSize(i);
      uncompressedOffset += this.size(i);
    }
    return out;
  }
}

const NODE_TYPES: Record<number, NodeType> = {
  [KIND_FILE]: "file",
  [KIND_DIR]: "dir",
  [KIND_SYMLINK]: "symlink",
  [KIND_CHAR]: "char",
  [KIND_BLOCK]: "block",
  [KIND_FIFO]: "fifo",
  [KIND_WHITEOUT]: "whiteout",
  [KIND_HARDLINK_REF]: "hardlink-ref",
};

/**
 * The tree as FsNodes (model.ts), one per inode reachable from the root: what the FsNode encoder
 * and the merge take. Costs what the table saves; for tests and small trees.
 */
export function treeToNodes(tree: TreeTable): FsNode {
  const decoder = new TextDecoder();
  const text = (id: number) => decoder.decode(tree.names.bytes.subarray(tree.names.start(id), tree.names.start(id) + tree.names.length(id)));
  const nodes = new Map<number, FsNode>();
  const node = (i: number): FsNode => {
    let n = nodes.get(i);
    if (n) return n;
    const kind = tree.kind(i);
    const xattrs = new Map<string, Uint8Array>();
    for (const [k, v] of tree.xattrs.get(i) ?? []) xattrs.set(text(k), v);
    n = { type: NODE_TYPES[kind]!, perm: tree.perm(i), uid: tree.uid(i), gid: tree.gid(i), mtime: tree.mtime(i), mtimeNsec: tree.mtimeNsec(i), size: 0, devMajor: 0, devMinor: 0, xattrs, chunks: [] };
    if (kind === KIND_DIR) {
      n.children = new Map();
      n.opaque = tree.opaque(i);
      n.implicit = tree.implicit(i);
    } else if (kind === KIND_FILE) {
      n.size = tree.size(i);
      for (let k = 0; k < tree.b(i); k++) n.chunks.push(tree.chunkRefs.get(tree.a(i) + k));
    } else if (kind === KIND_SYMLINK || kind === KIND_HARDLINK_REF) {
      n.target = text(tree.a(i));
      n.size = tree.size(i);
    } else if (kind === KIND_CHAR || kind === KIND_BLOCK) {
      n.devMajor = tree.a(i);
      n.devMinor = tree.b(i);
    }
    nodes.set(i, n);
    return n;
  };
  for (let i = 0; i < tree.inodeCount; i++) node(i);
  for (let e = 0; e < tree.entryCount; e++) if (tree.entryChild(e) !== REMOVED) node(tree.entryParent(e)).children!.set(text(tree.entryName(e)), node(tree.entryChild(e)));
  return node(0);
}
