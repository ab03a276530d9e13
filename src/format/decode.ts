// Reads format version 1 bytes in place. `Bootstrap.decode` validates everything once — sizes,
// every offset and length, names, the tree's shape, chunk bounds — so that a bootstrap from an
// untrusted proxy can never make a reader index outside its buffer or loop; after that, lookups are
// plain array reads and binary searches.
import { toHex } from "../hash/hasher.ts";
import * as L from "./layout.ts";
import { compareNames, type BlobRef, type BootstrapModel, type ChunkRecord, type FsNode, type NodeType } from "./model.ts";

export class BootstrapError extends Error {
  constructor(message: string) {
    super(`invalid bootstrap: ${message}`);
    this.name = "BootstrapError";
  }
}

export interface Inode {
  index: number;
  type: NodeType;
  /** Full st_mode: type bits and permission bits. */
  mode: number;
  uid: number;
  gid: number;
  nlink: number;
  size: number;
  mtime: number;
  mtimeNsec: number;
  flags: number;
  devMajor: number;
  devMinor: number;
}

export interface DirEntry {
  name: string;
  inode: number;
}

const decoder = new TextDecoder("utf-8", { fatal: true });
/** The extended attributes of every model node that has none (toModel): one map, not one each. */
const NO_XATTRS: ReadonlyMap<string, Uint8Array> = new Map();
// The OCI descriptor digest grammar (`algorithm:encoded`): no `/`, `.` runs, `%`, `?` or `#`.
const LAYER_DIGEST = /^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;

export class Bootstrap {
  readonly bytes: Uint8Array;
  readonly kind: "layer" | "image";
  readonly codec: number;
  readonly chunkShift: number;
  readonly platform: string;
  readonly inodeCount: number;
  readonly chunkCount: number;
  readonly blobCount: number;
  /** Every layer flag (L.FLAG_*) some inode carries: 0 for an image (imageOfOneLayer reads it). */
  readonly layerFlags: number;
  readonly #view: DataView;
  readonly #at: L.SectionOffsets;
  readonly #counts: L.Counts;
  // Index of each inode's first xattr record (xattrs are sorted by inode), -1 when none.
  readonly #xattrStart: Int32Array;
  /**
   * Chunk-table indexes by the first 48 bits of their digest (built on first use), in ascending
   * order where several share them. Numbers, not hex strings: building it for a table of thousands of chunks then makes
   * no garbage, which had held a node's thread for tens of milliseconds while it mounted.
   */
  #byPrefix: Map<number, number | number[]> | undefined;
  /** parentOf's table (built on first use). */
  #parents: Int32Array | undefined;

  private constructor(bytes: Uint8Array) {
    if (bytes.length < L.HEADER_SIZE) throw new BootstrapError(`${bytes.length} bytes is shorter than the header`);
    for (let i = 0; i < L.MAGIC.length; i++) if (bytes[i] !== L.MAGIC[i]) throw new BootstrapError("bad magic");
    this.bytes = bytes;
    this.#view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const version = this.#view.getUint16(L.H.version, true);
    if (version !== L.FORMAT_VERSION) throw new BootstrapError(`unsupported format version ${version}`);
    const kind = bytes[L.H.kind];
    if (kind !== L.KIND_LAYER && kind !== L.KIND_IMAGE) throw new BootstrapError(`unknown kind ${kind}`);
    this.kind = kind === L.KIND_LAYER ? "layer" : "image";
    this.codec = bytes[L.H.codec]!;
    this.chunkShift = bytes[L.H.chunkShift]!;
    if (this.chunkShift < L.MIN_CHUNK_SHIFT || this.chunkShift > L.MAX_CHUNK_SHIFT) throw new BootstrapError(`chunk size 2^${this.chunkShift} out of range`);
    const u = (o: number) => this.#view.getUint32(o, true);
    this.#counts = L.readCounts(this.#view);
    this.#at = L.sectionOffsets(this.#counts);
    if (this.#at.end !== bytes.length) throw new BootstrapError(`size ${bytes.length} does not match the ${this.#at.end} bytes its header describes`);
    this.inodeCount = this.#counts.inodeCount;
    this.chunkCount = this.#counts.chunkCount;
    this.blobCount = this.#counts.blobCount;
    this.platform = this.#string(u(L.H.platformOffset), u(L.H.platformLength), "platform");
    this.#xattrStart = new Int32Array(this.inodeCount).fill(-1);
    this.layerFlags = this.#validate();
  }

  static decode(bytes: Uint8Array): Bootstrap {
    return new Bootstrap(bytes);
  }

  get chunkSize(): number {
    return 2 ** this.chunkShift;
  }

  #u32(o: number): number {
    return this.#view.getUint32(o, true);
  }

  #u64(o: number): number {
    const v = this.#view.getBigUint64(o, true);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new BootstrapError(`value at byte ${o} too large`);
    return Number(v);
  }

  #stringBytes(offset: number, length: number, what: string): Uint8Array {
    if (offset + length > this.#counts.stringsSize) throw new BootstrapError(`${what} points outside the string table`);
    const start = this.#at.strings + offset;
    return this.bytes.subarray(start, start + length);
  }

  #string(offset: number, length: number, what: string): string {
    try {
      return decoder.decode(this.#stringBytes(offset, length, what));
    } catch (err) {
      if (err instanceof BootstrapError) throw err;
      throw new BootstrapError(`${what} is not UTF-8`);
    }
  }

  /**
   * One pass over every record; afterwards all accessors are safe. It reads fields in place and
   * allocates nothing per record: a bootstrap of 100,000 files validates in milliseconds.
   */
  #validate(): number {
    const c = this.#counts;
    const view = this.#view;
    const bytes = this.bytes;
    const at = this.#at;
    const u32 = (o: number) => view.getUint32(o, true);
    // u64 fields as two halves: no BigInt on the hot path; past 2^53 is refused.
    const u64 = (o: number) => {
      const hi = view.getUint32(o + 4, true);
      if (hi >= 0x200000) throw new BootstrapError(`value at byte ${o} too large`);
      return hi * 0x100000000 + view.getUint32(o, true);
    };
    const stringsEnd = c.stringsSize;
    const checkString = (offset: number, length: number, what: string) => {
      if (offset + length > stringsEnd) throw new BootstrapError(`${what} points outside the string table`);
    };
    if (c.inodeCount === 0) throw new BootstrapError("no root inode");
    const blobSizes: number[] = [];
    for (let i = 0; i < c.blobCount; i++) {
      const blob = this.blob(i);
      // Readers build data blob URLs from it: only a digest may go into that path.
      if (!LAYER_DIGEST.test(blob.layerDigest)) throw new BootstrapError(`blob ${i} layer digest ${JSON.stringify(blob.layerDigest.slice(0, 80))} is not a digest`);
      blobSizes.push(blob.storedSize);
    }

    const chunkLimit = this.chunkSize;
    const chunkSizes = new Uint32Array(c.chunkCount);
    for (let i = 0; i < c.chunkCount; i++) {
      const o = at.chunks + i * L.CHUNK_RECORD_SIZE;
      const blob = u32(o + 32);
      const compressed = (u32(o + 36) & L.CHUNK_COMPRESSED) !== 0;
      const storedOffset = u64(o + 40);
      const storedSize = u32(o + 48);
      const size = u32(o + 52);
      u64(o + 56);
      if (blob >= c.blobCount) throw new BootstrapError(`chunk ${i} names blob ${blob} of ${c.blobCount}`);
      if (size === 0 || size > chunkLimit) throw new BootstrapError(`chunk ${i} has size ${size}`);
      if (storedOffset + storedSize > blobSizes[blob]!) throw new BootstrapError(`chunk ${i} lies outside its blob`);
      if (!compressed && storedSize !== size) throw new BootstrapError(`uncompressed chunk ${i} has stored size ${storedSize} != ${size}`);
      // A chunk is stored compressed only when that is smaller; this also bounds what a reader
      // allocates for its stored bytes by the chunk size.
      if (compressed && this.codec === 0) throw new BootstrapError(`chunk ${i} is compressed in a bootstrap without a codec`);
      if (compressed && (storedSize === 0 || storedSize >= size)) throw new BootstrapError(`compressed chunk ${i} has stored size ${storedSize} for ${size} bytes`);
      chunkSizes[i] = size;
    }

    // The tree: every inode but the root is reached through a directory entry; directories exactly
    // once (no cycles, no directory hardlinks), and each non-directory as often as its link count.
    const seen = new Uint32Array(c.inodeCount);
    const types: NodeType[] = new Array(c.inodeCount);
    const nlinks = new Uint32Array(c.inodeCount);
    let direntsUsed = 0;
    let flagsUsed = 0;
    for (let i = 0; i < c.inodeCount; i++) {
      const o = at.inodes + i * L.INODE_RECORD_SIZE;
      const mode = u32(o);
      const flags = u32(o + 36);
      if (flags & ~L.KNOWN_FLAGS) throw new BootstrapError(`inode ${i} has unknown flags ${flags}`);
      if (this.kind === "image" && flags !== 0) throw new BootstrapError(`image inode ${i} has layer flags`);
      flagsUsed |= flags;
      const type = nodeType(mode, flags);
      if (!type) throw new BootstrapError(`inode ${i} has file type bits ${(mode & L.S_IFMT).toString(8)}`);
      if (i === 0 && type !== "dir") throw new BootstrapError("the root is not a directory");
      types[i] = type;
      nlinks[i] = u32(o + 12);
      const size = u64(o + 16);
      const a = u32(o + 40);
      const b = u32(o + 44);
      if (type === "dir") {
        if (a !== direntsUsed) throw new BootstrapError(`directory ${i} entries are not in inode order`);
        if (a + b > c.direntCount) throw new BootstrapError(`directory ${i} entries out of range`);
        direntsUsed += b;
        let prevStart = -1;
        let prevLength = 0;
        for (let k = a; k < a + b; k++) {
          const d = at.dirents + k * L.DIRENT_RECORD_SIZE;
          const nameOffset = u32(d);
          const nameLength = view.getUint16(d + 4, true);
          checkString(nameOffset, nameLength, `entry ${k} name`);
          const nameStart = at.strings + nameOffset;
          validateName(bytes, nameStart, nameLength, k);
          if (prevStart >= 0 && compareSpans(bytes, prevStart, prevLength, nameStart, nameLength) >= 0) {
            throw new BootstrapError(`directory ${i} entries are not sorted and unique`);
          }
          prevStart = nameStart;
          prevLength = nameLength;
          const target = u32(d + 8);
          if (target === 0 || target >= c.inodeCount) throw new BootstrapError(`entry ${k} points at inode ${target}`);
          // Depth-first numbering: an entry's first name always comes from a lower-numbered directory.
          if (seen[target] === 0 && target <= i) throw new BootstrapError(`entry ${k} points backwards at inode ${target}`);
          seen[target]!++;
        }
      } else if (type === "file") {
        if (a + b > c.chunkRefCount) throw new BootstrapError(`file ${i} chunks out of range`);
        let total = 0;
        for (let k = a; k < a + b; k++) {
          const ref = u32(at.chunkRefs + k * L.CHUNK_REF_SIZE);
          if (ref >= c.chunkCount) throw new BootstrapError(`file ${i} names chunk ${ref} of ${c.chunkCount}`);
          const chunkSize = chunkSizes[ref]!;
          if (k < a + b - 1 && chunkSize !== chunkLimit) throw new BootstrapError(`file ${i} has a short chunk before its last`);
          total += chunkSize;
        }
        if (total !== size) throw new BootstrapError(`file ${i} size ${size} != its chunks' ${total}`);
      } else if (type === "symlink" || type === "hardlink-ref") {
        if (b !== size || b === 0 || b > L.PATH_MAX) throw new BootstrapError(`link ${i} has a bad target length`);
        checkString(a, b, `link ${i} target`);
        if (!isUtf8(bytes, at.strings + a, b)) throw new BootstrapError(`link ${i} target is not UTF-8`);
      }
    }
    if (direntsUsed !== c.direntCount) throw new BootstrapError("unused directory entries");
    for (let i = 1; i < c.inodeCount; i++) {
      if (seen[i] === 0) throw new BootstrapError(`inode ${i} is unreachable`);
      if (types[i] === "dir" ? seen[i] !== 1 : seen[i] !== nlinks[i]) throw new BootstrapError(`inode ${i} has ${seen[i]} names but link count ${nlinks[i]}`);
    }

    let prevInode = -1;
    for (let k = 0; k < c.xattrCount; k++) {
      const x = at.xattrs + k * L.XATTR_RECORD_SIZE;
      const inode = u32(x);
      if (inode >= c.inodeCount || inode < prevInode) throw new BootstrapError(`xattr ${k} is out of order`);
      if (inode !== prevInode) this.#xattrStart[inode] = k;
      prevInode = inode;
      this.#string(u32(x + 4), view.getUint16(x + 8, true), `xattr ${k} name`);
      checkString(u32(x + 12), u32(x + 16), `xattr ${k} value`);
    }
    return flagsUsed;
  }

  #ab(i: number): [number, number] {
    const o = this.#at.inodes + i * L.INODE_RECORD_SIZE;
    return [this.#u32(o + 40), this.#u32(o + 44)];
  }

  blob(i: number): BlobRef {
    if (i < 0 || i >= this.#counts.blobCount) throw new RangeError(`no blob ${i}`);
    const o = this.#at.blobs + i * L.BLOB_RECORD_SIZE;
    return {
      dataDigest: this.bytes.slice(o, o + 32),
      storedSize: this.#u64(o + 32),
      layerDigest: this.#string(this.#u32(o + 40), this.#u32(o + 44), `blob ${i} layer digest`),
    };
  }

  /** The chunk table's bytes, in place: a layer bootstrap's data digest is their sha256 (encode-table.ts). */
  chunkTable(): Uint8Array {
    return this.bytes.subarray(this.#at.chunks, this.#at.chunks + this.#counts.chunkCount * L.CHUNK_RECORD_SIZE);
  }

  inode(i: number): Inode {
    if (i < 0 || i >= this.#counts.inodeCount) throw new RangeError(`no inode ${i}`);
    const o = this.#at.inodes + i * L.INODE_RECORD_SIZE;
    const mode = this.#u32(o);
    const flags = this.#u32(o + 36);
    if (flags & ~L.KNOWN_FLAGS) throw new BootstrapError(`inode ${i} has unknown flags ${flags}`);
    if (this.kind === "image" && flags !== 0) throw new BootstrapError(`image inode ${i} has layer flags`);
    const type = nodeType(mode, flags);
    if (!type) throw new BootstrapError(`inode ${i} has file type bits ${(mode & L.S_IFMT).toString(8)}`);
    const dev = type === "char" || type === "block";
    return {
      index: i,
      type,
      mode,
      uid: this.#u32(o + 4),
      gid: this.#u32(o + 8),
      nlink: this.#u32(o + 12),
      size: this.#u64(o + 16),
      mtime: Number(this.#view.getBigInt64(o + 24, true)),
      mtimeNsec: this.#u32(o + 32),
      flags,
      devMajor: dev ? this.#u32(o + 40) : 0,
      devMinor: dev ? this.#u32(o + 44) : 0,
    };
  }

  chunk(i: number): ChunkRecord {
    if (i < 0 || i >= this.#counts.chunkCount) throw new RangeError(`no chunk ${i}`);
    const o = this.#at.chunks + i * L.CHUNK_RECORD_SIZE;
    return {
      digest: this.bytes.subarray(o, o + 32),
      blob: this.#u32(o + 32),
      compressed: (this.#u32(o + 36) & L.CHUNK_COMPRESSED) !== 0,
      storedOffset: this.#u64(o + 40),
      storedSize: this.#u32(o + 48),
      size: this.#u32(o + 52),
      uncompressedOffset: this.#u64(o + 56),
    };
  }

  /**
   * The chunk-table index of the chunk whose content has this sha256 (lowercase hex), or null. A
   * chunk named twice in the table (an image whose layers share content) answers its lowest index.
   */
  chunkIndexOf(hex: string): number | null {
    const byPrefix = (this.#byPrefix ??= this.#indexByPrefix());
    const found = byPrefix.get(Number.parseInt(hex.slice(0, 12), 16));
    if (found === undefined) return null;
    for (const i of typeof found === "number" ? [found] : found) {
      const o = this.#at.chunks + i * L.CHUNK_RECORD_SIZE;
      if (toHex(this.bytes.subarray(o, o + 32)) === hex) return i;
    }
    return null;
  }

  #indexByPrefix(): Map<number, number | number[]> {
    const map = new Map<number, number | number[]>();
    for (let i = 0; i < this.chunkCount; i++) {
      const o = this.#at.chunks + i * L.CHUNK_RECORD_SIZE;
      // The digest's first six bytes, big-endian: parseInt of its first 12 hex digits.
      const prefix = this.#view.getUint16(o) * 2 ** 32 + this.#view.getUint32(o + 2);
      const seen = map.get(prefix);
      if (seen === undefined) map.set(prefix, i);
      else if (typeof seen === "number") map.set(prefix, [seen, i]);
      else seen.push(i);
    }
    return map;
  }

  /** Chunk-table indexes of a regular file's chunks; chunk k covers file bytes [k·chunkSize, …). */
  chunkIndexes(inode: number): number[] {
    if (this.inode(inode).type !== "file") return [];
    const [a, b] = this.#ab(inode);
    const out: number[] = [];
    for (let k = a; k < a + b; k++) out.push(this.#u32(this.#at.chunkRefs + k * L.CHUNK_REF_SIZE));
    return out;
  }

  chunks(inode: number): ChunkRecord[] {
    return this.chunkIndexes(inode).map((i) => this.chunk(i));
  }

  readlink(inode: number): string {
    const ino = this.inode(inode);
    if (ino.type !== "symlink" && ino.type !== "hardlink-ref") throw new Error(`inode ${inode} is not a link`);
    const [a, b] = this.#ab(inode);
    return this.#string(a, b, "link target");
  }

  xattrs(inode: number): Map<string, Uint8Array> {
    const out = new Map<string, Uint8Array>();
    let k = this.#xattrStart[inode] ?? -1;
    if (k < 0) return out;
    for (; k < this.#counts.xattrCount; k++) {
      const x = this.#at.xattrs + k * L.XATTR_RECORD_SIZE;
      if (this.#u32(x) !== inode) break;
      const key = this.#string(this.#u32(x + 4), this.#view.getUint16(x + 8, true), "xattr name");
      out.set(key, this.#stringBytes(this.#u32(x + 12), this.#u32(x + 16), "xattr value").slice());
    }
    return out;
  }

  /** Entries of a directory in name order (without `.` and `..`). */
  readdir(dir: number): DirEntry[] {
    if (this.inode(dir).type !== "dir") throw new Error(`inode ${dir} is not a directory`);
    const [a, b] = this.#ab(dir);
    const out: DirEntry[] = [];
    for (let k = a; k < a + b; k++) out.push(this.#dirent(k));
    return out;
  }

  /** The inodes of a directory's entries, in name order, without decoding their names. */
  childInodes(dir: number): number[] {
    if (this.inode(dir).type !== "dir") throw new Error(`inode ${dir} is not a directory`);
    const [a, b] = this.#ab(dir);
    const out: number[] = [];
    for (let k = a; k < a + b; k++) out.push(this.#u32(this.#at.dirents + k * L.DIRENT_RECORD_SIZE + 8));
    return out;
  }

  /**
   * The directory that holds `inode` (the root holds itself; a file with several names, the
   * directory of its first), from a table made once for the whole tree without decoding names.
   */
  parentOf(inode: number): number {
    if (!this.#parents) {
      const parents = new Int32Array(this.inodeCount).fill(-1);
      parents[0] = 0;
      for (let i = 0; i < this.inodeCount; i++) {
        if (this.inode(i).type !== "dir") continue;
        for (const child of this.childInodes(i)) if (parents[child] === -1) parents[child] = i;
      }
      this.#parents = parents;
    }
    return Math.max(0, this.#parents[inode] ?? 0);
  }

  #dirent(k: number): DirEntry {
    const d = this.#at.dirents + k * L.DIRENT_RECORD_SIZE;
    return { name: this.#string(this.#u32(d), this.#view.getUint16(d + 4, true), "name"), inode: this.#u32(d + 8) };
  }

  /** Binary search for one name in a directory. */
  child(dir: number, name: string): number | null {
    if (this.inode(dir).type !== "dir") return null;
    const want = new TextEncoder().encode(name);
    const [a, b] = this.#ab(dir);
    let lo = a;
    let hi = a + b - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const d = this.#at.dirents + mid * L.DIRENT_RECORD_SIZE;
      const cmp = compareNames(this.#stringBytes(this.#u32(d), this.#view.getUint16(d + 4, true), "name"), want);
      if (cmp === 0) return this.#u32(d + 8);
      if (cmp < 0) lo = mid + 1;
      else hi = mid - 1;
    }
    return null;
  }

  /** The inode at a path (`/a/b`, `a/b`; symlinks are not followed), or null. */
  lookup(path: string): number | null {
    let inode = 0;
    for (const part of path.split("/")) {
      if (part === "" || part === ".") continue;
      const next = this.child(inode, part);
      if (next === null) return null;
      inode = next;
    }
    return inode;
  }

  /** Every entry depth-first in name order, each hardlinked name included; the root is "/". */
  *walk(from: { path: string; inode: number } = { path: "/", inode: 0 }): Generator<{ path: string; inode: number }> {
    const stack = [from];
    while (stack.length) {
      const entry = stack.pop()!;
      yield entry;
      if (this.inode(entry.inode).type !== "dir") continue;
      const children = this.readdir(entry.inode);
      for (let k = children.length - 1; k >= 0; k--) {
        const ch = children[k]!;
        stack.push({ path: entry.path === "/" ? `/${ch.name}` : `${entry.path}/${ch.name}`, inode: ch.inode });
      }
    }
  }

  /** Rebuilds the in-memory tree (for merging layers into an image). */
  toModel(): BootstrapModel {
    // By inode number: a hardlinked file is one node under each of its names.
    const nodes: (FsNode | undefined)[] = new Array(this.inodeCount);
    const build = (i: number): FsNode => {
      const known = nodes[i];
      if (known) return known;
      const ino = this.inode(i);
      const node: FsNode = {
        type: ino.type,
        perm: ino.mode & 0o7777,
        uid: ino.uid,
        gid: ino.gid,
        mtime: ino.mtime,
        mtimeNsec: ino.mtimeNsec,
        size: ino.size,
        devMajor: ino.devMajor,
        devMinor: ino.devMinor,
        xattrs: this.#xattrStart[i] === -1 ? NO_XATTRS : this.xattrs(i),
        chunks: this.chunkIndexes(i),
      };
      if (ino.flags & L.FLAG_OPAQUE) node.opaque = true;
      if (ino.flags & L.FLAG_IMPLICIT) node.implicit = true;
      if (ino.type === "symlink" || ino.type === "hardlink-ref") node.target = this.readlink(i);
      nodes[i] = node;
      if (ino.type === "dir") {
        node.children = new Map();
        for (const e of this.readdir(i)) node.children.set(e.name, build(e.inode));
      }
      return node;
    };
    const root = build(0);
    return {
      kind: this.kind,
      codec: this.codec,
      chunkShift: this.chunkShift,
      platform: this.platform,
      blobs: Array.from({ length: this.blobCount }, (_, i) => this.blob(i)),
      chunks: Array.from({ length: this.chunkCount }, (_, i) => this.chunk(i)),
      root,
    };
  }
}

function nodeType(mode: number, flags: number): NodeType | null {
  if (flags & L.FLAG_WHITEOUT) return (mode & L.S_IFMT) === L.S_IFCHR ? "whiteout" : null;
  if (flags & L.FLAG_HARDLINK_REF) return (mode & L.S_IFMT) === L.S_IFREG ? "hardlink-ref" : null;
  switch (mode & L.S_IFMT) {
    case L.S_IFREG:
      return "file";
    case L.S_IFDIR:
      return "dir";
    case L.S_IFLNK:
      return "symlink";
    case L.S_IFCHR:
      return "char";
    case L.S_IFBLK:
      return "block";
    case L.S_IFIFO:
      return "fifo";
    default:
      return null;
  }
}

function validateName(bytes: Uint8Array, start: number, length: number, k: number): void {
  if (length === 0 || length > L.NAME_MAX) throw new BootstrapError(`entry ${k} name has length ${length}`);
  for (let i = start; i < start + length; i++) {
    if (bytes[i] === 0x2f || bytes[i] === 0) throw new BootstrapError(`entry ${k} name contains '/' or NUL`);
  }
  if (bytes[start] === 0x2e && (length === 1 || (length === 2 && bytes[start + 1] === 0x2e))) throw new BootstrapError(`entry ${k} is named . or ..`);
  if (!isUtf8(bytes, start, length)) throw new BootstrapError(`entry ${k} name is not UTF-8`);
}

/** Byte order of two spans of one buffer, as compareNames orders names. */
function compareSpans(bytes: Uint8Array, a: number, aLength: number, b: number, bLength: number): number {
  const n = Math.min(aLength, bLength);
  for (let i = 0; i < n; i++) if (bytes[a + i] !== bytes[b + i]) return bytes[a + i]! - bytes[b + i]!;
  return aLength - bLength;
}

/** Well-formed UTF-8 (no overlongs, surrogates or values past U+10FFFF), checked without decoding. */
function isUtf8(bytes: Uint8Array, start: number, length: number): boolean {
  const end = start + length;
  let i = start;
  while (i < end) {
    const b0 = bytes[i]!;
    if (b0 < 0x80) {
      i++;
      continue;
    }
    let need: number;
    let min: number;
    if (b0 >= 0xc2 && b0 <= 0xdf) [need, min] = [1, 0x80];
    else if (b0 >= 0xe0 && b0 <= 0xef) [need, min] = [2, 0x800];
    else if (b0 >= 0xf0 && b0 <= 0xf4) [need, min] = [3, 0x10000];
    else return false;
    if (i + need >= end) return false;
    let cp = b0 & (0x3f >> need);
    for (let k = 1; k <= need; k++) {
      const b = bytes[i + k]!;
      if ((b & 0xc0) !== 0x80) return false;
      cp = (cp << 6) | (b & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
    i += need + 1;
  }
  return true;
}
