// Writes an image bootstrap's file tree onto the local filesystem, fetching and verifying every
// chunk before it is written. The bootstrap may come from anywhere, so nothing it says can place a
// byte outside the destination: every path is built from validated names below it, every directory
// on the way is one this code created (checked with lstat before each use), files are opened with
// O_EXCL|O_NOFOLLOW, symlinks are created but never followed, and hardlinks only point at files
// created here.
import { execFile } from "node:child_process";
import { constants } from "node:fs";
import { access, link, lchown, lstat, lutimes, mkdir, open, realpath, symlink, chmod, type FileHandle } from "node:fs/promises";
import { delimiter, join } from "node:path";
import { promisify } from "node:util";
import { codecFromId } from "../format/chunk-codec.ts";
import type { Bootstrap, Inode } from "../format/decode.ts";
import { isValidName } from "../format/model.ts";
import { readVerifiedChunk, type ReadStored } from "./stored-chunks.ts";

const run = promisify(execFile);

export { ChunkMismatchError, type ReadStored } from "./stored-chunks.ts";

export interface MaterializeStats {
  entries: number;
  dirs: number;
  files: number;
  hardlinks: number;
  symlinks: number;
  devices: number;
  fifos: number;
  /** File content bytes written (each hardlinked file once). */
  bytes: number;
  chunks: number;
  /** Entries left out (devices when not root, layer-only nodes); each one was warned about. */
  skipped: number;
}

export interface MaterializeOptions {
  bootstrap: Bootstrap;
  readStored: ReadStored;
  /** An existing, empty directory. */
  dest: string;
  warn: (message: string) => void;
  onProgress?: (stats: MaterializeStats) => void;
}

const FILE_FLAGS = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;
const DIR_FLAGS = constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW;

interface Identity {
  dev: number;
  ino: number;
}

export async function materialize(opts: MaterializeOptions): Promise<MaterializeStats> {
  const { bootstrap: b, warn } = opts;
  const stats: MaterializeStats = { entries: 0, dirs: 0, files: 0, hardlinks: 0, symlinks: 0, devices: 0, fifos: 0, bytes: 0, chunks: 0, skipped: 0 };
  const isRoot = process.getuid?.() === 0;
  const codec = codecFromId(b.codec);
  if (codec === null) throw new Error(`the bootstrap uses unknown chunk codec ${b.codec}`);
  const root = await realpath(opts.dest);
  const rootStat = await lstat(root);
  if (!rootStat.isDirectory()) throw new Error(`${opts.dest} is not a directory`);

  // Directories this run created, by path relative to root, with the identity they had then.
  const created = new Map<string, Identity>([["", { dev: rootStat.dev, ino: rootStat.ino }]]);
  const firstName = new Map<number, string[]>();
  const skippedInodes = new Set<number>();
  const dirs: { path: string; inode: number }[] = [];
  const xattrs = new XattrWriter(warn);
  let warnedOwners = false;

  /** Refuses to create anything unless every directory from root to `parts`' parent is still ours. */
  const checkedPath = async (parts: string[]): Promise<string> => {
    let rel = "";
    for (const part of parts.slice(0, -1)) {
      rel = rel ? `${rel}/${part}` : part;
      const want = created.get(rel);
      const st = await lstat(join(root, rel));
      if (!want || !st.isDirectory() || st.dev !== want.dev || st.ino !== want.ino) {
        throw new Error(`refusing to write below ${join(root, rel)}: it is no longer the directory extract created`);
      }
    }
    return join(root, ...parts);
  };

  const setOwner = async (path: string, ino: Inode, fh?: FileHandle) => {
    if (!isRoot) {
      if (!warnedOwners && (ino.uid !== process.getuid?.() || ino.gid !== process.getgid?.())) {
        warn("not running as root: file owners are not restored");
        warnedOwners = true;
      }
      return;
    }
    // chown clears setuid/setgid and security.capability, so it comes before chmod and xattrs.
    if (fh) await fh.chown(ino.uid, ino.gid);
    else await lchown(path, ino.uid, ino.gid);
  };

  const writeFile = async (path: string, display: string, inode: number, ino: Inode) => {
    const fh = await open(path, FILE_FLAGS, 0o600);
    try {
      const records = b.chunks(inode);
      for (const [k, record] of records.entries()) {
        const data = await readVerifiedChunk(opts.readStored, codec, record, `${display}: chunk ${k}`);
        for (let at = 0; at < data.byteLength; ) at += (await fh.write(data, at, data.byteLength - at)).bytesWritten;
        stats.bytes += data.byteLength;
        stats.chunks++;
        opts.onProgress?.(stats);
      }
      await applyMetadata(path, inode, ino, fh);
    } finally {
      await fh.close();
    }
  };

  /** Owner first (chown clears setuid/setgid and capabilities), then xattrs, mode and times. */
  const applyMetadata = async (path: string, inode: number, ino: Inode, fh: FileHandle) => {
    await setOwner(path, ino, fh);
    await xattrs.apply(path, b.xattrs(inode));
    await fh.chmod(ino.mode & 0o7777);
    await fh.utimes(...times(ino));
  };

  const stack: { parts: string[]; inode: number }[] = [{ parts: [], inode: 0 }];
  while (stack.length) {
    const { parts, inode } = stack.pop()!;
    const ino = b.inode(inode);
    const display = `/${parts.join("/")}`;
    stats.entries++;
    if (parts.length === 0) {
      dirs.push({ path: root, inode });
    } else {
      const path = await checkedPath(parts);
      const first = firstName.get(inode);
      if (skippedInodes.has(inode)) {
        stats.skipped++;
        continue;
      }
      if (first !== undefined) {
        // Another name of an inode already created here (the decoder guarantees it is no directory);
        // link(2) would follow a symlink on the way to the first name, so that path is checked too.
        await link(await checkedPath(first), path);
        stats.hardlinks++;
        continue;
      }
      switch (ino.type) {
        case "dir": {
          await mkdir(path, 0o700);
          const st = await lstat(path);
          created.set(parts.join("/"), { dev: st.dev, ino: st.ino });
          dirs.push({ path, inode });
          stats.dirs++;
          break;
        }
        case "file":
          await writeFile(path, display, inode, ino);
          stats.files++;
          break;
        case "symlink":
          await symlink(b.readlink(inode), path);
          await setOwner(path, ino);
          await xattrs.apply(path, b.xattrs(inode));
          await lutimes(path, ...times(ino));
          stats.symlinks++;
          break;
        case "char":
        case "block":
        case "fifo": {
          if (ino.type !== "fifo" && !isRoot) {
            warn(`${display}: not running as root, device node skipped`);
            skippedInodes.add(inode);
            stats.skipped++;
            continue;
          }
          // Node has no mknod(2); the absolute path after `--` can't be taken for an option.
          if (ino.type === "fifo") await run("mkfifo", ["-m", "600", "--", path]);
          else await run("mknod", ["-m", "600", "--", path, ino.type === "char" ? "c" : "b", String(ino.devMajor), String(ino.devMinor)]);
          const st = await lstat(path);
          if (ino.type === "fifo" ? !st.isFIFO() : !(st.isCharacterDevice() || st.isBlockDevice())) throw new Error(`${path} changed while it was created`);
          await setOwner(path, ino);
          await xattrs.apply(path, b.xattrs(inode));
          await chmod(path, ino.mode & 0o7777);
          await lutimes(path, ...times(ino));
          if (ino.type === "fifo") stats.fifos++;
          else stats.devices++;
          break;
        }
        default:
          warn(`${display}: ${ino.type} entries belong in layer bootstraps only, skipped`);
          skippedInodes.add(inode);
          stats.skipped++;
          continue;
      }
      if (ino.type !== "dir" && ino.nlink > 1) firstName.set(inode, parts); // only hardlinks are met again
    }
    opts.onProgress?.(stats);
    if (ino.type !== "dir") continue;
    const children = b.readdir(inode);
    for (let k = children.length - 1; k >= 0; k--) {
      const c = children[k]!;
      if (!isValidName(c.name)) throw new Error(`${display}: invalid entry name ${JSON.stringify(c.name)}`);
      stack.push({ parts: [...parts, c.name], inode: c.inode });
    }
  }

  // Directory metadata last (creating entries changes mtimes; a read-only mode would block them),
  // deepest first: the reverse of the depth-first order they were created in.
  for (const { path, inode } of dirs.reverse()) {
    const ino = b.inode(inode);
    const fh = await open(path, DIR_FLAGS);
    try {
      await applyMetadata(path, inode, ino, fh);
    } finally {
      await fh.close();
    }
  }
  return stats;
}

/**
 * [atime, mtime] for the utimes family, both the inode's mtime: fractional seconds, except before
 * 1970, where Node would take a negative number for "now" and only a Date keeps the time.
 */
function times(ino: Inode): [number | Date, number | Date] {
  const s = ino.mtime + ino.mtimeNsec / 1e9;
  const t = s < 0 ? new Date(s * 1000) : s;
  return [t, t];
}

/** Sets extended attributes with setfattr(1) (Node has no xattr API); warns once when it is missing. */
class XattrWriter {
  #available: Promise<boolean> | undefined;
  #warned = false;

  constructor(readonly warn: (message: string) => void) {}

  async apply(path: string, xattrs: Map<string, Uint8Array>): Promise<void> {
    if (xattrs.size === 0) return;
    this.#available ??= onPath("setfattr");
    if (!(await this.#available)) {
      if (!this.#warned) this.warn("setfattr not found (Debian package attr): extended attributes are not restored");
      this.#warned = true;
      return;
    }
    for (const [name, value] of xattrs) {
      // -h: never follow a symlink; 0s: the value is base64, so any bytes pass intact.
      const encoded = value.byteLength ? `0s${Buffer.from(value).toString("base64")}` : "";
      await run("setfattr", ["-h", "-n", name, "-v", encoded, "--", path]).catch((err: Error) => {
        this.warn(`${path}: xattr ${name} not set: ${err.message.split("\n")[0]}`);
      });
    }
  }
}

async function onPath(command: string): Promise<boolean> {
  for (const dir of (process.env.PATH ?? "").split(delimiter)) {
    if (!dir) continue;
    try {
      await access(join(dir, command), constants.X_OK);
      return true;
    } catch {
      // next
    }
  }
  return false;
}
