// The part of fuse-native@2 (which ships no types) that the agent uses. Callbacks take a negative
// errno (or 0); read's callback takes the byte count instead.
declare module "fuse-native" {
  export interface FuseStat {
    mode: number;
    uid: number;
    gid: number;
    size: number;
    dev?: number;
    nlink: number;
    ino?: number;
    rdev?: number;
    blksize?: number;
    blocks?: number;
    /** Milliseconds since the epoch (or a Date); fuse-native carries no finer precision. */
    atime: number | Date;
    mtime: number | Date;
    ctime: number | Date;
  }

  export interface FuseStatfs {
    bsize: number;
    frsize: number;
    blocks: number;
    bfree: number;
    bavail: number;
    files: number;
    ffree: number;
    favail: number;
    fsid: number;
    flag: number;
    namemax: number;
  }

  type Done = (code: number) => void;

  export interface FuseOps {
    init?(cb: Done): void;
    statfs?(path: string, cb: (code: number, statfs?: FuseStatfs) => void): void;
    getattr?(path: string, cb: (code: number, stat?: FuseStat) => void): void;
    fgetattr?(path: string, fd: number, cb: (code: number, stat?: FuseStat) => void): void;
    readdir?(path: string, cb: (code: number, names?: string[], stats?: FuseStat[]) => void): void;
    readlink?(path: string, cb: (code: number, target?: string) => void): void;
    open?(path: string, flags: number, cb: (code: number, fd?: number) => void): void;
    opendir?(path: string, flags: number, cb: (code: number, fd?: number) => void): void;
    /** `cb(bytesRead)` on success, `cb(-errno)` on failure. */
    read?(path: string, fd: number, buf: Buffer, len: number, pos: number, cb: (bytesOrCode: number) => void): void;
    release?(path: string, fd: number, cb: Done): void;
    releasedir?(path: string, fd: number, cb: Done): void;
    getxattr?(path: string, name: string, position: number, cb: (code: number, value?: Buffer | null) => void): void;
    listxattr?(path: string, cb: (code: number, names?: string[]) => void): void;
    access?(path: string, mode: number, cb: Done): void;
    flush?(path: string, fd: number, cb: Done): void;
    fsync?(path: string, datasync: number, fd: number, cb: Done): void;
    fsyncdir?(path: string, datasync: number, fd: number, cb: Done): void;
    truncate?(path: string, size: number, cb: Done): void;
    ftruncate?(path: string, fd: number, size: number, cb: Done): void;
    utimens?(path: string, atime: number, mtime: number, cb: Done): void;
    chown?(path: string, uid: number, gid: number, cb: Done): void;
    chmod?(path: string, mode: number, cb: Done): void;
    mknod?(path: string, mode: number, dev: number, cb: Done): void;
    setxattr?(path: string, name: string, value: Buffer, position: number, flags: number, cb: Done): void;
    removexattr?(path: string, name: string, cb: Done): void;
    write?(path: string, fd: number, buf: Buffer, len: number, pos: number, cb: (bytesOrCode: number) => void): void;
    create?(path: string, mode: number, cb: (code: number, fd?: number) => void): void;
    unlink?(path: string, cb: Done): void;
    rename?(src: string, dest: string, cb: Done): void;
    link?(src: string, dest: string, cb: Done): void;
    symlink?(src: string, dest: string, cb: Done): void;
    mkdir?(path: string, mode: number, cb: Done): void;
    rmdir?(path: string, cb: Done): void;
  }

  export interface FuseOptions {
    debug?: boolean;
    force?: boolean;
    mkdir?: boolean;
    allowOther?: boolean;
    allowRoot?: boolean;
    autoUnmount?: boolean;
    defaultPermissions?: boolean;
    kernelCache?: boolean;
    autoCache?: boolean;
    fsname?: string;
    subtype?: string;
    maxRead?: number;
    /** Seconds. */
    attrTimeout?: number;
    entryTimeout?: number;
    /** Milliseconds after which fuse-native answers an unanswered op itself (ETIMEDOUT); false: never. */
    timeout?: number | false;
  }

  export default class Fuse {
    constructor(mountpoint: string, ops: FuseOps, opts?: FuseOptions);
    readonly mnt: string;
    mount(cb: (err: Error | null) => void): void;
    unmount(cb: (err: Error | null) => void): void;
    /** The `-o…` argument handed to libfuse (not documented, but the only way to add options). */
    protected _fuseOptions(): string;
    /** The ops as given. */
    protected ops: FuseOps;
    /**
     * What libfuse calls for getxattr/listxattr: `buf` is the caller's buffer (length 0 asks for the
     * size), and `signal(result, buf.buffer)` answers with a length or a negative errno.
     */
    protected _op_getxattr(signal: (result: number, buf: ArrayBufferLike) => void, path: string, name: string, buf: Buffer, position: number): void;
    protected _op_listxattr(signal: (result: number, buf: ArrayBufferLike) => void, path: string, buf: Buffer): void;
    static unmount(mountpoint: string, cb: (err: Error | null) => void): void;
  }
}
