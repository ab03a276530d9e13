// Bootstrap inodes as the attributes a FUSE mount reports: `attrOf` in the kernel's own terms
// (fuse/), `statOf` and `statfsOf` as the records fuse-native hands to libfuse.
import type { FuseStat, FuseStatfs } from "fuse-native";
import type { Bootstrap } from "../../src/format/decode.ts";
import type { Attr, Statfs } from "./fuse/kernel-abi.ts";

const BLOCK = 512;
const IO_SIZE = 4096;
const ST_RDONLY = 1;
const NAME_MAX = 255;

/**
 * The attributes of `inode`. `ino` is the inode index + 1 (FUSE reserves 0; every name of a
 * hardlinked file shows the same number). atime and ctime are the mtime.
 */
export function attrOf(b: Bootstrap, inode: number): Attr {
  const ino = b.inode(inode);
  const size = ino.type === "file" ? ino.size : ino.type === "symlink" ? Buffer.byteLength(b.readlink(inode)) : ino.type === "dir" ? IO_SIZE : 0;
  return {
    ino: inode + 1,
    size,
    blocks: ino.type === "file" ? Math.ceil(size / BLOCK) : 0,
    mtime: ino.mtime,
    mtimeNsec: ino.mtimeNsec,
    mode: ino.mode,
    nlink: ino.nlink,
    uid: ino.uid,
    gid: ino.gid,
    rdev: ino.type === "char" || ino.type === "block" ? makedev(ino.devMajor, ino.devMinor) : 0,
    blksize: IO_SIZE,
  };
}

/**
 * attrOf for fuse-native, which passes times as milliseconds: the nanoseconds below a millisecond
 * are lost, and it can't carry times before 1970 (shown as 1970).
 */
export function statOf(b: Bootstrap, inode: number): FuseStat {
  const a = attrOf(b, inode);
  const ms = Math.max(0, a.mtime * 1000 + Math.floor(a.mtimeNsec / 1e6));
  return { mode: a.mode, uid: a.uid, gid: a.gid, size: a.size, nlink: a.nlink, ino: a.ino, rdev: a.rdev, blksize: a.blksize, blocks: a.blocks, atime: ms, mtime: ms, ctime: ms };
}

/**
 * Linux's dev_t (glibc gnu_dev_makedev), cut to 32 bits as both FUSE interfaces carry it: exact for
 * majors below 4096 and minors below 2^20, which is every device number Linux hands out today.
 */
export function makedev(major: number, minor: number): number {
  return ((minor & 0xff) | ((major & 0xfff) << 8) | ((minor & ~0xff) << 12)) >>> 0;
}

/** A full, read-only filesystem the size of the image's file data. */
export function kernelStatfsOf(b: Bootstrap): Statfs {
  let bytes = 0;
  for (let i = 0; i < b.inodeCount; i++) {
    const ino = b.inode(i);
    if (ino.type === "file") bytes += ino.size;
  }
  return { blocks: Math.ceil(bytes / IO_SIZE), files: b.inodeCount, bsize: IO_SIZE, namelen: NAME_MAX };
}

export function statfsOf(b: Bootstrap): FuseStatfs {
  const s = kernelStatfsOf(b);
  return { bsize: s.bsize, frsize: s.bsize, blocks: s.blocks, bfree: 0, bavail: 0, files: s.files, ffree: 0, favail: 0, fsid: 0, flag: ST_RDONLY, namemax: s.namelen };
}
