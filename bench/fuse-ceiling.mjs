// What fuse-native itself allows on this machine: a FUSE filesystem whose handlers do no work (a
// read answers at once with the buffer as it is, attributes are constants). The cold-start bench
// reads through it beside skiff's mount, so the table shows how much of the gap to local disk is
// the binding's per-request cost. Root only; stop it with SIGTERM (it unmounts).
//   node bench/fuse-ceiling.mjs MOUNTPOINT --file-bytes N --entries N
// Tree: /file (N bytes) and /tree/dNNN/fNNN, 100 entries per directory, `--entries` in all.
import Fuse from "fuse-native";
import { parseArgs } from "node:util";

const { values, positionals } = parseArgs({ allowPositionals: true, options: { "file-bytes": { type: "string" }, entries: { type: "string" } } });
const [mountpoint] = positionals;
const FILE_BYTES = Number(values["file-bytes"]);
const ENTRIES = Number(values.entries);
if (!mountpoint || !(FILE_BYTES > 0) || !(ENTRIES > 0)) throw new Error("usage: fuse-ceiling.mjs MOUNTPOINT --file-bytes N --entries N");
const PER_DIR = 100;
const DIRS = Math.ceil(ENTRIES / (PER_DIR + 1));

const now = new Date();
const attr = (mode, size) => ({ mtime: now, atime: now, ctime: now, size, mode, uid: 0, gid: 0, nlink: 1 });
const DIR = attr(0o40755, 4096);
const names = (n, prefix) => Array.from({ length: n }, (_, i) => `${prefix}${i}`);
const TOP = names(DIRS, "d");
const FILES = names(PER_DIR, "f");

const ops = {
  getattr(path, cb) {
    if (path === "/" || path === "/tree" || /^\/tree\/d\d+$/.test(path)) return cb(0, DIR);
    if (path === "/file") return cb(0, attr(0o100644, FILE_BYTES));
    if (/^\/tree\/d\d+\/f\d+$/.test(path)) return cb(0, attr(0o100644, 0));
    cb(Fuse.ENOENT);
  },
  readdir(path, cb) {
    if (path === "/") return cb(0, ["file", "tree"]);
    if (path === "/tree") return cb(0, TOP);
    cb(0, FILES);
  },
  open(_path, _flags, cb) {
    cb(0, 1);
  },
  read(_path, _fd, _buf, len, pos, cb) {
    cb(Math.max(0, Math.min(len, FILE_BYTES - pos)));
  },
};

const fuse = new Fuse(mountpoint, ops, { kernelCache: true, allowOther: true, attrTimeout: 86_400, entryTimeout: 86_400 });
fuse.mount((err) => {
  if (err) throw err;
  console.log(`mounted ${mountpoint}`);
});
process.once("SIGTERM", () => fuse.unmount(() => process.exit(0)));
