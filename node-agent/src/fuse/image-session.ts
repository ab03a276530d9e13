// One image (or layer) mount's side of the FUSE protocol: takes the kernel's requests as bytes and
// answers them from the bootstrap, file bytes through a FileReader.
//
// It keeps no state the kernel depends on: node ids are inode indexes + 1 and handles are 0, so a
// new process that decodes the same bootstrap answers a mount that an old one started (fuse/keeper).
import { constants as fsConstants } from "node:fs";
import { constants } from "node:os";
import type { Bootstrap } from "../../../src/format/decode.ts";
import { attrOf, kernelStatfsOf } from "../fuse-attrs.ts";
import { readPiecesWithin, type FileReader } from "../file-reader.ts";
import { CACHE_SECONDS, O_ACCMODE, viewOf, type ImageView, type ViewOf } from "../image-view.ts";
import { READAHEAD_BYTES } from "./dev-fuse.ts";
import * as K from "./kernel-abi.ts";

export interface ImageSessionOptions {
  bootstrap: Bootstrap;
  reader: FileReader;
  view: ImageView;
  /** A read the reader hasn't answered after this long fails with EIO. */
  readTimeoutMs: number;
}

/**
 * Sends one reply to the kernel: `reply`, followed by the pieces of `body` when given (a read's
 * bytes, passed as they are so that the sender can write them all at once rather than join them),
 * then calls `sent`: the body's memory is the reader's again.
 */
export type SendReply = (reply: Uint8Array, body?: readonly Uint8Array[], sent?: () => void) => void;

const E = constants.errno;
// Directory listings kept between READDIR calls of a large directory.
const LISTINGS_KEPT = 64;
// 1 MiB reads where the kernel allows them (its max_pages_limit), and up to 64 readaheads at once.
const MAX_PAGES = 256;
const MAX_BACKGROUND = 64;
const WANTED_INIT_FLAGS =
  K.InitFlag.ASYNC_READ | K.InitFlag.DO_READDIRPLUS | K.InitFlag.READDIRPLUS_AUTO | K.InitFlag.PARALLEL_DIROPS | K.InitFlag.MAX_PAGES | K.InitFlag.CACHE_SYMLINKS;

interface Listing {
  names: Uint8Array[];
  /** Inode index of each name; -1 for `.` and `..` (no lookup is implied for them). */
  inodes: number[];
  dotIno: number;
  dotDotIno: number;
}

export class ImageSession {
  readonly #b: Bootstrap;
  readonly #reader: FileReader;
  readonly #view: ViewOf;
  readonly #timeoutMs: number;
  readonly #decoder = new TextDecoder("utf-8", { fatal: true });
  readonly #encoder = new TextEncoder();
  readonly #listings = new Map<number, Listing>();
  #statfs: Uint8Array | undefined;

  constructor(o: ImageSessionOptions) {
    this.#b = o.bootstrap;
    this.#reader = o.reader;
    this.#view = viewOf(o.bootstrap, o.view);
    this.#timeoutMs = o.readTimeoutMs;
  }

  /** Answers `req` through `send` (now or, for reads, later); requests that take no reply get none. */
  handle(req: Uint8Array, send: SendReply): void {
    const h = K.readInHeader(req);
    if (K.UNANSWERED_OPS.has(h.opcode)) return;
    const body = req.subarray(K.IN_HEADER_SIZE, h.len);
    try {
      if (h.opcode === K.Op.READ) return this.#read(h, body, send);
      send(this.#answer(h, body));
    } catch {
      // A request naming a node or offset the bootstrap doesn't have: an error, never a crash.
      send(K.errorReply(h.unique, E.EIO));
    }
  }

  #answer(h: K.InHeader, body: Uint8Array): Uint8Array {
    const ok = (out?: Uint8Array) => K.reply(h.unique, 0, out);
    const fail = (errno: number) => K.errorReply(h.unique, errno);
    if (h.opcode === K.Op.INIT) return this.#init(h, body);
    if (K.WRITING_OPS.has(h.opcode)) return fail(E.EROFS);
    const inode = this.#inodeOf(h.nodeid);
    if (inode === null) return fail(E.ESTALE);
    const b = this.#b;
    switch (h.opcode) {
      case K.Op.LOOKUP: {
        const child = this.#child(inode, body);
        // A name that isn't there is cached by the kernel too (node id 0).
        return ok(child === null ? K.entryOut(0, null, CACHE_SECONDS) : K.entryOut(child + 1, attrOf(b, child), CACHE_SECONDS));
      }
      case K.Op.GETATTR:
        return ok(K.attrOut(attrOf(b, inode), CACHE_SECONDS));
      case K.Op.READLINK:
        return b.inode(inode).type === "symlink" ? ok(this.#encoder.encode(b.readlink(inode))) : fail(E.EINVAL);
      case K.Op.OPEN: {
        const flags = K.openFlagsIn(body);
        if ((flags & O_ACCMODE) !== 0 || (flags & (fsConstants.O_TRUNC | fsConstants.O_CREAT)) !== 0) return fail(E.EROFS);
        return b.inode(inode).type === "file" ? ok(K.openOut(K.FOPEN_KEEP_CACHE)) : fail(E.EACCES);
      }
      case K.Op.OPENDIR:
        return b.inode(inode).type === "dir" ? ok(K.openOut(K.FOPEN_KEEP_CACHE | K.FOPEN_CACHE_DIR)) : fail(E.ENOTDIR);
      case K.Op.READDIR:
      case K.Op.READDIRPLUS:
        return ok(this.#readdir(inode, K.readReadIn(body), h.opcode === K.Op.READDIRPLUS));
      case K.Op.STATFS:
        return ok((this.#statfs ??= K.statfsOut(kernelStatfsOf(b))));
      case K.Op.GETXATTR: {
        const value = this.#view.xattrs(inode).get(K.nameIn(body.subarray(8), this.#decoder));
        return value === undefined ? fail(E.ENODATA) : this.#sized(h, K.xattrSizeIn(body), value);
      }
      case K.Op.LISTXATTR: {
        const names = [...this.#view.xattrs(inode).keys()].map((n) => `${n}\0`).join("");
        return this.#sized(h, K.xattrSizeIn(body), this.#encoder.encode(names));
      }
      case K.Op.RELEASE:
      case K.Op.RELEASEDIR:
      case K.Op.FLUSH:
      case K.Op.FSYNC:
      case K.Op.FSYNCDIR:
      case K.Op.DESTROY:
      // The mount has default_permissions: the kernel checks access itself.
      case K.Op.ACCESS:
        return ok();
      default:
        return fail(E.ENOSYS);
    }
  }

  #init(h: K.InHeader, body: Uint8Array): Uint8Array {
    const init = K.readInitIn(body);
    if (init.major !== K.FUSE_KERNEL_VERSION) return K.errorReply(h.unique, E.EPROTO);
    return K.reply(
      h.unique,
      0,
      K.initOut({
        minor: Math.min(init.minor, K.FUSE_KERNEL_MINOR),
        // The kernel sets the mount's readahead to the smaller of this and what it has now, which
        // mountDevFuse raised before the first request was read: echoing the kernel's offer (128
        // KiB) undid that, and a sequential reader got 256 KiB requests one at a time.
        maxReadahead: READAHEAD_BYTES,
        flags: init.flags & WANTED_INIT_FLAGS,
        maxBackground: MAX_BACKGROUND,
        congestionThreshold: (MAX_BACKGROUND * 3) / 4,
        maxWrite: 4096, // nothing is written; and requests must fit dev-fuse.ts's read buffer
        maxPages: MAX_PAGES,
      }),
    );
  }

  #read(h: K.InHeader, body: Uint8Array, send: SendReply): void {
    const inode = this.#inodeOf(h.nodeid);
    if (inode === null) return send(K.errorReply(h.unique, E.ESTALE));
    if (this.#b.inode(inode).type !== "file") return send(K.errorReply(h.unique, E.EISDIR));
    const { offset, size } = K.readReadIn(body);
    readPiecesWithin(this.#reader, inode, offset, size, this.#timeoutMs).then(
      ({ pieces, release }) => {
        const body = atMost(pieces, size);
        send(K.replyHeader(h.unique, body.reduce((n, piece) => n + piece.byteLength, 0)), body, release);
      },
      () => send(K.errorReply(h.unique, E.EIO)),
    );
  }

  /** GETXATTR and LISTXATTR: the length when asked for 0 bytes, ERANGE when it doesn't fit. */
  #sized(h: K.InHeader, size: number, value: Uint8Array): Uint8Array {
    if (size === 0) return K.reply(h.unique, 0, K.xattrSizeOut(value.byteLength));
    if (value.byteLength > size) return K.errorReply(h.unique, E.ERANGE);
    return K.reply(h.unique, 0, value);
  }

  /** The inode of a node id, or null if the mount shows no such node. */
  #inodeOf(nodeid: bigint): number | null {
    const inode = Number(nodeid) - 1;
    if (!(inode >= 0 && inode < this.#b.inodeCount) || !this.#view.isVisible(inode)) return null;
    return inode;
  }

  #child(dir: number, body: Uint8Array): number | null {
    let name: string;
    try {
      name = K.nameIn(body, this.#decoder);
    } catch {
      return null; // not UTF-8: the bootstrap holds no such name
    }
    const child = this.#b.child(dir, name);
    return child !== null && this.#view.isVisible(child) ? child : null;
  }

  #readdir(dir: number, { offset, size }: K.ReadIn, plus: boolean): Uint8Array {
    const listing = this.#listing(dir);
    const out = new Uint8Array(size);
    let used = 0;
    for (let k = offset; k < listing.names.length; k++) {
      const name = listing.names[k]!;
      const length = K.direntSize(name.byteLength, plus);
      if (used + length > size) break;
      const inode = listing.inodes[k]!;
      const ino = inode >= 0 ? inode + 1 : k === 0 ? listing.dotIno : listing.dotDotIno;
      const mode = inode >= 0 ? this.#b.inode(inode).mode : 0o040000;
      if (plus) {
        if (inode >= 0) K.writeEntryOut(out, used, ino, attrOf(this.#b, inode), CACHE_SECONDS);
        K.writeDirent(out, used + K.ENTRY_OUT_SIZE, ino, k + 1, mode >>> 12, name);
      } else {
        K.writeDirent(out, used, ino, k + 1, mode >>> 12, name);
      }
      used += length;
    }
    return out.subarray(0, used);
  }

  #listing(dir: number): Listing {
    let listing = this.#listings.get(dir);
    if (listing) return listing;
    if (this.#b.inode(dir).type !== "dir") throw new Error(`inode ${dir} is not a directory`);
    listing = { names: [this.#encoder.encode("."), this.#encoder.encode("..")], inodes: [-1, -1], dotIno: dir + 1, dotDotIno: this.#b.parentOf(dir) + 1 };
    for (const entry of this.#b.readdir(dir)) {
      if (!this.#view.isVisible(entry.inode)) continue;
      listing.names.push(this.#encoder.encode(entry.name));
      listing.inodes.push(entry.inode);
    }
    if (this.#listings.size >= LISTINGS_KEPT) this.#listings.clear();
    this.#listings.set(dir, listing);
    return listing;
  }
}

/** The first `size` bytes of `pieces` (a reader never gives more than asked; this makes sure). */
function atMost(pieces: Uint8Array[], size: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (const piece of pieces) {
    if (size <= 0) break;
    out.push(piece.byteLength > size ? piece.subarray(0, size) : piece);
    size -= piece.byteLength;
  }
  return out;
}
