// Byte layout of the bootstrap, format version 1. docs/format.md is the specification; this file
// is its transcription into constants, and the encoder and decoder share nothing else.

export const MAGIC = new Uint8Array([0x73, 0x6b, 0x69, 0x66, 0x66, 0x62, 0x73, 0x00]); // "skiffbs\0"
export const FORMAT_VERSION = 1;
/** Content-Type of a bootstrap served by the lazy API. */
export const BOOTSTRAP_MEDIA_TYPE = "application/vnd.skiff.bootstrap.v1";

export const KIND_LAYER = 1;
export const KIND_IMAGE = 2;

export const HEADER_SIZE = 64;
export const BLOB_RECORD_SIZE = 48;
export const INODE_RECORD_SIZE = 48;
export const DIRENT_RECORD_SIZE = 12;
export const CHUNK_RECORD_SIZE = 64;
export const CHUNK_REF_SIZE = 4;
export const XATTR_RECORD_SIZE = 20;

/** Sections follow the header in this order, each starting on an 8-byte boundary. */
export const SECTION_ALIGN = 8;

// Header field offsets.
export const H = {
  magic: 0,
  version: 8,
  kind: 10,
  codec: 11,
  chunkShift: 12,
  blobCount: 16,
  inodeCount: 20,
  direntCount: 24,
  chunkCount: 28,
  chunkRefCount: 32,
  xattrCount: 36,
  stringsSize: 40,
  platformOffset: 44,
  platformLength: 48,
} as const;

// st_mode file type bits (POSIX values, as Linux uses them).
export const S_IFMT = 0o170000;
export const S_IFREG = 0o100000;
export const S_IFDIR = 0o040000;
export const S_IFLNK = 0o120000;
export const S_IFCHR = 0o020000;
export const S_IFBLK = 0o060000;
export const S_IFIFO = 0o010000;

// Inode flags.
/** Layer bootstraps only: this name deletes the same name in the layers below (a `.wh.` file). */
export const FLAG_WHITEOUT = 1 << 0;
/** Layer bootstraps only: the directory hides everything below it in lower layers (`.wh..wh..opq`). */
export const FLAG_OPAQUE = 1 << 1;
/** Layer bootstraps only: a directory the layer implies (a parent of an entry) but never describes. */
export const FLAG_IMPLICIT = 1 << 2;
/** Layer bootstraps only: a hardlink to a path outside this layer, resolved when layers are merged. */
export const FLAG_HARDLINK_REF = 1 << 3;
export const KNOWN_FLAGS = FLAG_WHITEOUT | FLAG_OPAQUE | FLAG_IMPLICIT | FLAG_HARDLINK_REF;

// Chunk flags.
/** The stored bytes are compressed with the bootstrap's codec (otherwise stored as is). */
export const CHUNK_COMPRESSED = 1 << 0;

export const MIN_CHUNK_SHIFT = 16; // 64 KiB
export const MAX_CHUNK_SHIFT = 24; // 16 MiB
export const DEFAULT_CHUNK_SHIFT = 20; // 1 MiB
export const NAME_MAX = 255;
export const PATH_MAX = 4096;

export const align = (n: number) => Math.ceil(n / SECTION_ALIGN) * SECTION_ALIGN;

export interface SectionOffsets {
  blobs: number;
  inodes: number;
  dirents: number;
  chunks: number;
  chunkRefs: number;
  xattrs: number;
  strings: number;
  end: number;
}

export interface Counts {
  blobCount: number;
  inodeCount: number;
  direntCount: number;
  chunkCount: number;
  chunkRefCount: number;
  xattrCount: number;
  stringsSize: number;
}

/** The record counts a header announces. */
export function readCounts(header: DataView): Counts {
  const u32 = (o: number) => header.getUint32(o, true);
  return {
    blobCount: u32(H.blobCount),
    inodeCount: u32(H.inodeCount),
    direntCount: u32(H.direntCount),
    chunkCount: u32(H.chunkCount),
    chunkRefCount: u32(H.chunkRefCount),
    xattrCount: u32(H.xattrCount),
    stringsSize: u32(H.stringsSize),
  };
}

export interface Header extends Counts {
  kind: typeof KIND_LAYER | typeof KIND_IMAGE;
  codec: number;
  chunkShift: number;
  platformOffset: number;
  platformLength: number;
}

/** Writes the header (magic and version included) at the start of `out`. */
export function writeHeader(out: Uint8Array, h: Header): void {
  const view = new DataView(out.buffer, out.byteOffset, HEADER_SIZE);
  const u32 = (o: number, v: number) => view.setUint32(o, v, true);
  out.set(MAGIC, H.magic);
  view.setUint16(H.version, FORMAT_VERSION, true);
  out[H.kind] = h.kind;
  out[H.codec] = h.codec;
  out[H.chunkShift] = h.chunkShift;
  u32(H.blobCount, h.blobCount);
  u32(H.inodeCount, h.inodeCount);
  u32(H.direntCount, h.direntCount);
  u32(H.chunkCount, h.chunkCount);
  u32(H.chunkRefCount, h.chunkRefCount);
  u32(H.xattrCount, h.xattrCount);
  u32(H.stringsSize, h.stringsSize);
  u32(H.platformOffset, h.platformOffset);
  u32(H.platformLength, h.platformLength);
}

/** Where each section starts, given the counts in the header; `end` is the exact total size. */
export function sectionOffsets(c: Counts): SectionOffsets {
  const blobs = HEADER_SIZE;
  const inodes = align(blobs + c.blobCount * BLOB_RECORD_SIZE);
  const dirents = align(inodes + c.inodeCount * INODE_RECORD_SIZE);
  const chunks = align(dirents + c.direntCount * DIRENT_RECORD_SIZE);
  const chunkRefs = align(chunks + c.chunkCount * CHUNK_RECORD_SIZE);
  const xattrs = align(chunkRefs + c.chunkRefCount * CHUNK_REF_SIZE);
  const strings = align(xattrs + c.xattrCount * XATTR_RECORD_SIZE);
  const end = strings + c.stringsSize;
  return { blobs, inodes, dirents, chunks, chunkRefs, xattrs, strings, end };
}
