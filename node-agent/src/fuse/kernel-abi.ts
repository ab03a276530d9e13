// The bytes of the FUSE kernel protocol (Linux's include/uapi/linux/fuse.h) that a read-only
// filesystem needs, at protocol 7.31: request and reply headers, the records of the requests we
// read and of the replies we write. All little-endian, as on every Linux that runs skiff.

export const FUSE_KERNEL_VERSION = 7;
/** The minor version whose layouts the replies below follow; a newer kernel speaks it to us. */
export const FUSE_KERNEL_MINOR = 31;
export const FUSE_ROOT_ID = 1;

export const Op = {
  LOOKUP: 1,
  FORGET: 2,
  GETATTR: 3,
  SETATTR: 4,
  READLINK: 5,
  SYMLINK: 6,
  MKNOD: 8,
  MKDIR: 9,
  UNLINK: 10,
  RMDIR: 11,
  RENAME: 12,
  LINK: 13,
  OPEN: 14,
  READ: 15,
  WRITE: 16,
  STATFS: 17,
  RELEASE: 18,
  FSYNC: 20,
  SETXATTR: 21,
  GETXATTR: 22,
  LISTXATTR: 23,
  REMOVEXATTR: 24,
  FLUSH: 25,
  INIT: 26,
  OPENDIR: 27,
  READDIR: 28,
  RELEASEDIR: 29,
  FSYNCDIR: 30,
  ACCESS: 34,
  CREATE: 35,
  INTERRUPT: 36,
  DESTROY: 38,
  BATCH_FORGET: 42,
  FALLOCATE: 43,
  READDIRPLUS: 44,
  RENAME2: 45,
  COPY_FILE_RANGE: 47,
  TMPFILE: 51,
} as const;

/** Requests that change the tree or its data: a read-only image answers EROFS. */
export const WRITING_OPS: ReadonlySet<number> = new Set([
  Op.SETATTR, Op.SYMLINK, Op.MKNOD, Op.MKDIR, Op.UNLINK, Op.RMDIR, Op.RENAME, Op.LINK, Op.WRITE,
  Op.SETXATTR, Op.REMOVEXATTR, Op.CREATE, Op.FALLOCATE, Op.RENAME2, Op.COPY_FILE_RANGE, Op.TMPFILE,
]);

/** Requests the kernel expects no reply to. */
export const UNANSWERED_OPS: ReadonlySet<number> = new Set([Op.FORGET, Op.BATCH_FORGET, Op.INTERRUPT]);

/** INIT flags skiff asks for (each only if the kernel offers it). */
export const InitFlag = {
  ASYNC_READ: 1 << 0,
  DO_READDIRPLUS: 1 << 13,
  READDIRPLUS_AUTO: 1 << 14,
  PARALLEL_DIROPS: 1 << 18,
  MAX_PAGES: 1 << 22,
  CACHE_SYMLINKS: 1 << 23,
} as const;

export const FOPEN_KEEP_CACHE = 1 << 1;
export const FOPEN_CACHE_DIR = 1 << 3;

export const IN_HEADER_SIZE = 40;
export const OUT_HEADER_SIZE = 16;
const ATTR_SIZE = 88;
export const ENTRY_OUT_SIZE = 40 + ATTR_SIZE;
const ATTR_OUT_SIZE = 16 + ATTR_SIZE;
const INIT_OUT_SIZE = 64;
/** A kernel older than 7.23 reads this much of the INIT reply. */
const COMPAT_22_INIT_OUT_SIZE = 24;

export interface InHeader {
  len: number;
  opcode: number;
  unique: bigint;
  nodeid: bigint;
  uid: number;
  gid: number;
  pid: number;
}

export function readInHeader(req: Uint8Array): InHeader {
  const v = view(req);
  return {
    len: v.getUint32(0, true),
    opcode: v.getUint32(4, true),
    unique: v.getBigUint64(8, true),
    nodeid: v.getBigUint64(16, true),
    uid: v.getUint32(24, true),
    gid: v.getUint32(28, true),
    pid: v.getUint32(32, true),
  };
}

/** The `unique` of a reply, which names the request it answers. */
export function replyUnique(reply: Uint8Array): bigint {
  return view(reply).getBigUint64(8, true);
}

export function requestUnique(req: Uint8Array): bigint {
  return view(req).getBigUint64(8, true);
}

export function requestOpcode(req: Uint8Array): number {
  return view(req).getUint32(4, true);
}

/** A reply: the out header, then `body`. `error` is 0 or a negated errno. */
export function reply(unique: bigint, error: number, body?: Uint8Array): Uint8Array {
  const out = new Uint8Array(OUT_HEADER_SIZE + (body?.byteLength ?? 0));
  writeOutHeader(out, unique, error, out.byteLength);
  if (body) out.set(body, OUT_HEADER_SIZE);
  return out;
}

/** The out header alone of a successful reply whose body, `bodyLength` bytes, is sent right after it. */
export function replyHeader(unique: bigint, bodyLength: number): Uint8Array {
  const out = new Uint8Array(OUT_HEADER_SIZE);
  writeOutHeader(out, unique, 0, OUT_HEADER_SIZE + bodyLength);
  return out;
}

function writeOutHeader(out: Uint8Array, unique: bigint, error: number, length: number): void {
  const v = view(out);
  v.setUint32(0, length, true);
  v.setInt32(4, error, true);
  v.setBigUint64(8, unique, true);
}

export function errorReply(unique: bigint, errno: number): Uint8Array {
  return reply(unique, -Math.abs(errno));
}

/** FUSE_NOTIFY_RESEND's code (Linux 6.9 on): a notification is a reply header with unique 0 and the code as its error. */
const NOTIFY_RESEND = 7;

/**
 * The notification that makes the kernel queue again every request read from the connection and
 * not answered yet (it sets bit 63 of their unique): what a server that died had read reaches the
 * next reader instead of waiting forever. Kernels before 6.9 refuse it (EINVAL).
 */
export function notifyResend(): Uint8Array {
  const out = new Uint8Array(OUT_HEADER_SIZE);
  writeOutHeader(out, 0n, NOTIFY_RESEND, OUT_HEADER_SIZE);
  return out;
}

export interface InitIn {
  major: number;
  minor: number;
  maxReadahead: number;
  flags: number;
}

export function readInitIn(body: Uint8Array): InitIn {
  const v = view(body);
  return { major: v.getUint32(0, true), minor: v.getUint32(4, true), maxReadahead: v.getUint32(8, true), flags: v.getUint32(12, true) };
}

export interface InitOut {
  minor: number;
  maxReadahead: number;
  flags: number;
  maxBackground: number;
  congestionThreshold: number;
  maxWrite: number;
  maxPages: number;
}

/** The INIT reply; as long as the kernel's minor version reads it. */
export function initOut(o: InitOut): Uint8Array {
  const out = new Uint8Array(o.minor < 23 ? COMPAT_22_INIT_OUT_SIZE : INIT_OUT_SIZE);
  const v = view(out);
  v.setUint32(0, FUSE_KERNEL_VERSION, true);
  v.setUint32(4, o.minor, true);
  v.setUint32(8, o.maxReadahead, true);
  v.setUint32(12, o.flags, true);
  v.setUint16(16, o.maxBackground, true);
  v.setUint16(18, o.congestionThreshold, true);
  v.setUint32(20, o.maxWrite, true);
  if (out.byteLength > COMPAT_22_INIT_OUT_SIZE) {
    v.setUint32(24, 1, true); // time_gran: nanoseconds
    v.setUint16(28, o.maxPages, true);
  }
  return out;
}

/** One inode's attributes, as `struct fuse_attr` carries them. */
export interface Attr {
  ino: number;
  size: number;
  blocks: number;
  /** Seconds since the epoch (may be negative) and the nanoseconds within it. */
  mtime: number;
  mtimeNsec: number;
  mode: number;
  nlink: number;
  uid: number;
  gid: number;
  rdev: number;
  blksize: number;
}

function writeAttr(v: DataView, at: number, a: Attr): void {
  v.setBigUint64(at, BigInt(a.ino), true);
  v.setBigUint64(at + 8, BigInt(a.size), true);
  v.setBigUint64(at + 16, BigInt(a.blocks), true);
  for (const t of [24, 32, 40]) v.setBigInt64(at + t, BigInt(a.mtime), true); // atime, mtime, ctime
  for (const t of [48, 52, 56]) v.setUint32(at + t, a.mtimeNsec, true);
  v.setUint32(at + 60, a.mode, true);
  v.setUint32(at + 64, a.nlink, true);
  v.setUint32(at + 68, a.uid, true);
  v.setUint32(at + 72, a.gid, true);
  v.setUint32(at + 76, a.rdev, true);
  v.setUint32(at + 80, a.blksize, true);
}

/** `struct fuse_entry_out` into `out` at `at`: a name's node and attributes, valid for `validSec`. */
export function writeEntryOut(out: Uint8Array, at: number, nodeid: number, attr: Attr | null, validSec: number): void {
  const v = view(out);
  v.setBigUint64(at, BigInt(nodeid), true);
  v.setBigUint64(at + 16, BigInt(validSec), true); // entry_valid
  v.setBigUint64(at + 24, BigInt(validSec), true); // attr_valid
  if (attr) writeAttr(v, at + 40, attr);
}

export function entryOut(nodeid: number, attr: Attr | null, validSec: number): Uint8Array {
  const out = new Uint8Array(ENTRY_OUT_SIZE);
  writeEntryOut(out, 0, nodeid, attr, validSec);
  return out;
}

export function attrOut(attr: Attr, validSec: number): Uint8Array {
  const out = new Uint8Array(ATTR_OUT_SIZE);
  const v = view(out);
  v.setBigUint64(0, BigInt(validSec), true);
  writeAttr(v, 16, attr);
  return out;
}

export function openOut(openFlags: number): Uint8Array {
  const out = new Uint8Array(16);
  view(out).setUint32(8, openFlags, true);
  return out;
}

export interface Statfs {
  blocks: number;
  files: number;
  bsize: number;
  namelen: number;
}

/** `struct fuse_kstatfs` of a full filesystem: nothing free. */
export function statfsOut(s: Statfs): Uint8Array {
  const out = new Uint8Array(80);
  const v = view(out);
  v.setBigUint64(0, BigInt(s.blocks), true);
  v.setBigUint64(24, BigInt(s.files), true);
  v.setUint32(40, s.bsize, true);
  v.setUint32(44, s.namelen, true);
  v.setUint32(48, s.bsize, true); // frsize
  return out;
}

/** The `size` asked for by GETXATTR and LISTXATTR (0: only the length). */
export function xattrSizeIn(body: Uint8Array): number {
  return view(body).getUint32(0, true);
}

export function xattrSizeOut(size: number): Uint8Array {
  const out = new Uint8Array(8);
  view(out).setUint32(0, size, true);
  return out;
}

export interface ReadIn {
  offset: number;
  size: number;
}

export function readReadIn(body: Uint8Array): ReadIn {
  const v = view(body);
  return { offset: Number(v.getBigUint64(8, true)), size: v.getUint32(16, true) };
}

/** The open(2) flags of an OPEN request. */
export function openFlagsIn(body: Uint8Array): number {
  return view(body).getUint32(0, true);
}

/** A NUL-terminated name at the start of `body`. */
export function nameIn(body: Uint8Array, decoder: TextDecoder): string {
  const end = body.indexOf(0);
  return decoder.decode(end < 0 ? body : body.subarray(0, end));
}

const DIRENT_HEADER = 24;

/** The size of one `struct fuse_dirent` (or, with `plus`, `fuse_direntplus`) for a name, padded to 8. */
export function direntSize(nameBytes: number, plus: boolean): number {
  return (plus ? ENTRY_OUT_SIZE : 0) + ((DIRENT_HEADER + nameBytes + 7) & ~7);
}

/** Writes a dirent at `at`; `nextOffset` is the cookie the kernel passes back to go on after it. */
export function writeDirent(out: Uint8Array, at: number, ino: number, nextOffset: number, type: number, name: Uint8Array): void {
  const v = view(out);
  v.setBigUint64(at, BigInt(ino), true);
  v.setBigUint64(at + 8, BigInt(nextOffset), true);
  v.setUint32(at + 16, name.byteLength, true);
  v.setUint32(at + 20, type, true);
  out.set(name, at + DIRENT_HEADER);
}

function view(b: Uint8Array): DataView {
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}
