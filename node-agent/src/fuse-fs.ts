// The read-only FUSE filesystem of one image: the tree, attributes, link targets and xattrs come
// from the bootstrap, file bytes only through a FileReader. fuse-native's API is path based
// (libfuse 2 high level), so every op resolves its path with the bootstrap's lookup, cached.
//
// Every callback here runs on the JS thread of the process serving the mount: nothing in this
// process may touch the mountpoint synchronously, or the kernel waits for a callback that can't run.
import { constants as fsConstants } from "node:fs";
import { constants } from "node:os";
import Fuse, { type FuseOps } from "fuse-native";
import type { Bootstrap } from "../../src/format/decode.ts";
import { statfsOf, statOf } from "./fuse-attrs.ts";
import { copyPieces, readPiecesWithin, type FileReader } from "./file-reader.ts";
import { CACHE_SECONDS, O_ACCMODE, viewOf, type ImageView } from "./image-view.ts";

export interface MountOptions {
  bootstrap: Bootstrap;
  reader: FileReader;
  /** An existing, empty directory. */
  mountpoint: string;
  /** libfuse's debug output on stderr. */
  debug?: boolean;
  /** Let users other than the mounting one in (needs user_allow_other unless root); default true. */
  allowOther?: boolean;
  /** A read the reader hasn't answered after this long fails with EIO; default 60 s. */
  readTimeoutMs?: number;
  /** Default `image`; see ImageView. */
  view?: ImageView;
}

export interface MountedImage {
  readonly mountpoint: string;
  unmount(): Promise<void>;
}

const E = constants.errno;
const DEFAULT_READ_TIMEOUT_MS = 60_000;
// Paths remembered (positive and negative lookups) before the cache starts over.
const PATH_CACHE_LIMIT = 100_000;
const MAX_HANDLE = 0x7fff_ffff;

/**
 * fuse-native has no switch for `ro` and `use_ino`; they are appended to the option string it builds.
 * `use_ino` makes libfuse report our st_ino, so hardlinks share an inode number.
 */
class ImageFuse extends Fuse {
  protected override _fuseOptions(): string {
    const base = super._fuseOptions();
    return base ? `${base},ro,use_ino` : "-oro,use_ino";
  }

  // fuse-native copies an xattr value (or the name list) into the caller's buffer even when it does
  // not fit, and reports the full length, which libfuse turns into EIO. A caller whose buffer is too
  // small must get ERANGE instead, so that it asks again with a bigger one, as getfattr and Python do.
  protected override _op_getxattr(signal: (result: number, buf: ArrayBufferLike) => void, path: string, name: string, buf: Buffer, position: number): void {
    this.ops.getxattr!(path, name, position, (code, value) => {
      if (code !== 0) return signal(code, buf.buffer);
      if (!value) return signal(-E.ENODATA, buf.buffer);
      if (buf.length > 0 && value.length > buf.length) return signal(-E.ERANGE, buf.buffer);
      value.copy(buf);
      signal(value.length, buf.buffer);
    });
  }

  protected override _op_listxattr(signal: (result: number, buf: ArrayBufferLike) => void, path: string, buf: Buffer): void {
    this.ops.listxattr!(path, (code, names) => {
      if (code !== 0 || !names) return signal(code || -E.EIO, buf.buffer);
      const list = Buffer.from(names.map((n) => `${n}\0`).join(""));
      if (buf.length === 0) return signal(list.length, buf.buffer);
      if (list.length > buf.length) return signal(-E.ERANGE, buf.buffer);
      list.copy(buf);
      signal(list.length, buf.buffer);
    });
  }
}

export async function mountImage(opts: MountOptions): Promise<MountedImage> {
  const fuse = new ImageFuse(opts.mountpoint, imageOps(opts), {
    debug: opts.debug ?? false,
    allowOther: opts.allowOther ?? true,
    defaultPermissions: true,
    kernelCache: true,
    attrTimeout: CACHE_SECONDS,
    entryTimeout: CACHE_SECONDS,
    fsname: "skiff",
    subtype: "skiff",
    // fuse-native's own watchdog (ETIMEDOUT) only as a backstop behind the read timeout below.
    timeout: (opts.readTimeoutMs ?? DEFAULT_READ_TIMEOUT_MS) + 5_000,
  });
  await new Promise<void>((resolve, reject) => fuse.mount((err) => (err ? reject(err) : resolve())));
  let unmounted: Promise<void> | undefined;
  return {
    mountpoint: fuse.mnt,
    unmount: () => (unmounted ??= new Promise<void>((resolve, reject) => fuse.unmount((err) => (err ? reject(err) : resolve())))),
  };
}

function imageOps({ bootstrap: b, reader, readTimeoutMs = DEFAULT_READ_TIMEOUT_MS, view = "image" }: MountOptions): FuseOps {
  const { isVisible, xattrs: xattrsOf } = viewOf(b, view);
  const paths = new Map<string, number | null>();
  const resolve = (path: string): number | null => {
    let inode = paths.get(path);
    if (inode === undefined) {
      inode = b.lookup(path);
      if (inode !== null && !isVisible(inode)) inode = null;
      if (paths.size >= PATH_CACHE_LIMIT) paths.clear();
      paths.set(path, inode);
    }
    return inode;
  };
  // Open files by handle, so read() needs no path lookup.
  const handles = new Map<number, number>();
  let nextHandle = 1;
  let statfs: ReturnType<typeof statfsOf> | undefined;
  const rofs = (...args: unknown[]) => (args[args.length - 1] as (code: number) => void)(-E.EROFS);

  return {
    getattr(path, cb) {
      const inode = resolve(path);
      if (inode === null) return cb(-E.ENOENT);
      cb(0, statOf(b, inode));
    },
    fgetattr(path, fd, cb) {
      const inode = handles.get(fd) ?? resolve(path);
      if (inode === null) return cb(-E.ENOENT);
      cb(0, statOf(b, inode));
    },
    readdir(path, cb) {
      const inode = resolve(path);
      if (inode === null) return cb(-E.ENOENT);
      if (b.inode(inode).type !== "dir") return cb(-E.ENOTDIR);
      // libfuse's high-level readdir lists only what it is given.
      const names = [".", ".."];
      for (const entry of b.readdir(inode)) if (isVisible(entry.inode)) names.push(entry.name);
      cb(0, names);
    },
    readlink(path, cb) {
      const inode = resolve(path);
      if (inode === null) return cb(-E.ENOENT);
      if (b.inode(inode).type !== "symlink") return cb(-E.EINVAL);
      cb(0, b.readlink(inode));
    },
    open(path, flags, cb) {
      const inode = resolve(path);
      if (inode === null) return cb(-E.ENOENT);
      const { O_RDONLY, O_TRUNC, O_CREAT } = fsConstants;
      if ((flags & O_ACCMODE) !== O_RDONLY || (flags & (O_TRUNC | O_CREAT)) !== 0) return cb(-E.EROFS);
      if (b.inode(inode).type !== "file") return cb(-E.EACCES);
      if (handles.size >= MAX_HANDLE) return cb(-E.ENFILE);
      while (handles.has(nextHandle)) nextHandle = nextHandle >= MAX_HANDLE ? 1 : nextHandle + 1;
      const fd = nextHandle;
      handles.set(fd, inode);
      nextHandle = fd >= MAX_HANDLE ? 1 : fd + 1;
      cb(0, fd);
    },
    read(path, fd, buf, len, pos, cb) {
      const inode = handles.get(fd) ?? resolve(path);
      if (inode === null) return cb(-E.EBADF);
      readPiecesWithin(reader, inode, pos, len, readTimeoutMs).then(
        ({ pieces, release }) => {
          const n = copyPieces(pieces, buf.subarray(0, len));
          release();
          cb(n);
        },
        () => cb(-E.EIO),
      );
    },
    release(_path, fd, cb) {
      handles.delete(fd);
      cb(0);
    },
    statfs(_path, cb) {
      cb(0, (statfs ??= statfsOf(b)));
    },
    getxattr(path, name, _position, cb) {
      const inode = resolve(path);
      if (inode === null) return cb(-E.ENOENT);
      const value = xattrsOf(inode).get(name);
      if (value === undefined) return cb(-E.ENODATA);
      cb(0, Buffer.from(value));
    },
    listxattr(path, cb) {
      const inode = resolve(path);
      if (inode === null) return cb(-E.ENOENT);
      cb(0, [...xattrsOf(inode).keys()]);
    },
    // The mount is `ro`, so the kernel refuses most writes itself; these answer whatever gets through.
    write: rofs,
    create: rofs,
    truncate: rofs,
    ftruncate: rofs,
    utimens: rofs,
    chown: rofs,
    chmod: rofs,
    mknod: rofs,
    setxattr: rofs,
    removexattr: rofs,
    unlink: rofs,
    rename: rofs,
    link: rofs,
    symlink: rofs,
    mkdir: rofs,
    rmdir: rofs,
  };
}
