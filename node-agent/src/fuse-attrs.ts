// Bootstrap inodes as the stat and statfs records fuse-native hands to libfuse.
import type { FuseStat, FuseStatfs } from "fuse-native";
import type { Bootstrap } from "../../src/format/decode.ts";

const BLOCK = 512;
const IO_SIZE = 4096;
const ST_RDONLY = 1;
const NAME_MAX = 255;

/**
 * The attributes of `inode`. `ino` is the inode index + 1 (FUSE reserves 0; with use_ino every name
 * of a hardlinked file shows the same number). fuse-native passes times as milliseconds, so the
 * nanoseconds below a millisecond are lost, and it can't carry times before 1970 (shown as 1970).
 */
export function statOf(b: Bootstrap, inode: number): FuseStat {
  const ino = b.inode(inode);
  const size = ino.type === "file" ? ino.size : ino.type === "symlink" ? Buffer.byteLength(b.readlink(inode)) : ino.type === "dir" ? IO_SIZE : 0;
  const ms = Math.max(0, ino.mtime * 1000 + Math.floor(ino.mtimeNsec / 1e6));
  return {
    mode: ino.mode,
    uid: ino.uid,
    gid: ino.gid,
    size,
    nlink: ino.nlink,
    ino: inode + 1,
    rdev: ino.type === "char" || ino.type === "block" ? makedev(ino.devMajor, ino.devMinor) : 0,
    blksize: IO_SIZE,
    blocks: ino.type === "file" ? Math.ceil(size / BLOCK) : 0,
    atime: ms,
    mtime: ms,
    ctime: ms,
  };
}

/**
 * Linux's dev_t (glibc gnu_dev_makedev), cut to the 32 bits fuse-native carries: exact for majors
 * below 4096 and minors below 2^20, which is every device number Linux hands out today.
 */
export function makedev(major: number, minor: number): number {
  return ((minor & 0xff) | ((major & 0xfff) << 8) | ((minor & ~0xff) << 12)) >>> 0;
}

/** A full, read-only filesystem the size of the image's file data. */
export function statfsOf(b: Bootstrap): FuseStatfs {
  let bytes = 0;
  for (let i = 0; i < b.inodeCount; i++) {
    const ino = b.inode(i);
    if (ino.type === "file") bytes += ino.size;
  }
  const blocks = Math.ceil(bytes / IO_SIZE);
  return { bsize: IO_SIZE, frsize: IO_SIZE, blocks, bfree: 0, bavail: 0, files: b.inodeCount, ffree: 0, favail: 0, fsid: 0, flag: ST_RDONLY, namemax: NAME_MAX };
}
