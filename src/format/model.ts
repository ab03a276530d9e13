// The in-memory file tree that the converter builds, the merge rewrites and the encoder writes.
// Hardlinks are one FsNode reachable under several names; link counts are derived at encode time.

export type NodeType = "file" | "dir" | "symlink" | "char" | "block" | "fifo" | "whiteout" | "hardlink-ref";

export interface FsNode {
  type: NodeType;
  /** Permission bits including setuid, setgid and sticky (mode & 0o7777). */
  perm: number;
  uid: number;
  gid: number;
  mtime: number;
  mtimeNsec: number;
  /** Regular files: content length. Symlinks: target length in bytes. Others: 0. */
  size: number;
  /** Symlink target, or for a layer's `hardlink-ref` the path it links to. */
  target?: string;
  devMajor: number;
  devMinor: number;
  /** Read-only: nodes without extended attributes may share one empty map (Bootstrap.toModel). */
  xattrs: ReadonlyMap<string, Uint8Array>;
  /** Regular files: indexes into the bootstrap's chunk table, in file order. */
  chunks: number[];
  /** Directories: entries by name. */
  children?: Map<string, FsNode>;
  /** Layer directories: hides lower layers' content below it. */
  opaque?: boolean;
  /** Layer directories: implied by a deeper entry, carries no metadata of its own. */
  implicit?: boolean;
}

export interface BlobRef {
  /**
   * The data blob's identity: the sha256 of its layer bootstrap's chunk table (docs/format.md,
   * encodeTable in encode-table.ts); in bootstraps written before 2026-12-07, of its stored bytes.
   */
  dataDigest: Uint8Array;
  storedSize: number;
  /** The layer this data blob was converted from (`sha256:…`). */
  layerDigest: string;
}

export interface ChunkRecord {
  /** sha256 of the uncompressed chunk bytes. */
  digest: Uint8Array;
  blob: number;
  compressed: boolean;
  storedOffset: number;
  storedSize: number;
  /** Uncompressed length. */
  size: number;
  /** Offset in the blob's uncompressed address space (the chunks of the blob laid end to end). */
  uncompressedOffset: number;
}

export interface BootstrapModel {
  kind: "layer" | "image";
  /** Chunk codec id (see codec.ts). */
  codec: number;
  chunkShift: number;
  /** `os/arch[/variant]` for image bootstraps, "" for layers. */
  platform: string;
  blobs: BlobRef[];
  chunks: ChunkRecord[];
  root: FsNode;
}

export function newDir(meta: Partial<FsNode> = {}): FsNode {
  return { ...baseNode("dir", 0o755), ...meta, children: meta.children ?? new Map() };
}

export function baseNode(type: NodeType, perm: number): FsNode {
  return { type, perm, uid: 0, gid: 0, mtime: 0, mtimeNsec: 0, size: 0, devMajor: 0, devMinor: 0, xattrs: new Map(), chunks: [] };
}

/** Byte-wise comparison of UTF-8 encodings: the order of directory entries in the format. */
export function compareNames(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i]! - b[i]!;
  return a.length - b.length;
}

const utf8 = new TextEncoder();

/** A directory entry name the format accepts: 1–255 bytes, no `/`, no NUL, not `.` or `..`. */
export function isValidName(name: string): boolean {
  if (name === "" || name === "." || name === ".." || name.includes("/") || name.includes("\0")) return false;
  // No UTF-16 code unit takes more than 3 bytes of UTF-8: most names need no encoding to check.
  return name.length <= 85 || utf8.encode(name).length <= 255;
}
