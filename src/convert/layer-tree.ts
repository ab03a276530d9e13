// Builds one layer's file tree from its tar entries, keeping what the merge needs: whiteouts
// (`.wh.NAME`), opaque directories (`.wh..wh..opq`), directories the layer only implies, and
// hardlinks to files of lower layers. Paths are taken lexically: an entry is never placed through a
// symlink, and names that would leave the root are refused, so no tree built here can point outside.
import { isValidName } from "../format/model.ts";
import { KIND_BLOCK, KIND_CHAR, KIND_DIR, KIND_FIFO, KIND_FILE, KIND_HARDLINK_REF, KIND_SYMLINK, KIND_WHITEOUT, TreeTable } from "../format/tree-table.ts";
import type { TarEntry } from "./tar.ts";

const WHITEOUT_PREFIX = ".wh.";
const OPAQUE_MARKER = ".wh..wh..opq";
// Other `.wh..wh.` names are AUFS bookkeeping (e.g. `.wh..wh.plnk/`), never part of the image.
const AUFS_META_PREFIX = ".wh..wh.";

/** An entry the converter left out, and why; reported, never silently dropped. */
export interface SkippedEntry {
  path: string;
  reason: string;
}

/** Skipped entries reported by path; past them only counted. */
export const SKIPPED_KEPT = 100;
/** The longest path a report keeps: a PAX path may be a megabyte. */
const SKIPPED_PATH_CHARS = 1000;

/**
 * The entries left out: every one counted, the first SKIPPED_KEPT kept for the report, so a layer of
 * hundreds of thousands of bad names costs no more memory than a few.
 */
export class SkippedEntries {
  readonly kept: SkippedEntry[] = [];
  count = 0;

  add(path: string, reason: string): void {
    this.count++;
    if (this.kept.length < SKIPPED_KEPT) this.kept.push({ path: path.length > SKIPPED_PATH_CHARS ? `${path.slice(0, SKIPPED_PATH_CHARS)}…` : path, reason });
  }
}

/**
 * Entries nested deeper than this are left out. A tar path may be a megabyte long (PAX), and the
 * tree is encoded, merged and walked recursively: 20,000 levels overflowed the stack. Linux's
 * PATH_MAX (4096 bytes) allows at most 2048 levels anyway, and real images stay far below.
 */
export const MAX_DEPTH = 1024;

/** Splits an archive path into components: `./a//b/` → [a, b]; null when it climbs out (`..`). */
export function pathComponents(path: string): string[] | null {
  const parts: string[] = [];
  for (const part of path.split("/")) {
    if (part === "" || part === ".") continue;
    if (part === "..") return null;
    parts.push(part);
  }
  return parts;
}

export class LayerTree {
  /** Inode 0 is the root. Kept in columns, not objects: a layer may have hundreds of thousands of entries. */
  readonly table = new TreeTable();
  readonly skipped = new SkippedEntries();
  entries = 0;

  /** The parent directory for `parts`, creating implied directories; -1 if a non-directory is in the way. */
  #parent(parts: string[], path: string): number {
    const t = this.table;
    let dir = 0;
    for (let i = 0; i < parts.length - 1; i++) {
      const part = parts[i]!;
      const name = t.names.intern(part);
      let next = t.child(dir, name);
      const kind = next === -1 ? 0 : t.kind(next);
      if (kind === KIND_WHITEOUT) {
        // Deleted below and recreated here as a directory: the new one hides the old.
        next = newDir(t, true);
        t.setOpaque(next, true);
        t.link(dir, name, next);
      } else if (next === -1) {
        next = newDir(t, true);
        t.link(dir, name, next);
      } else if (kind !== KIND_DIR) {
        this.skipped.add(path, `parent ${part} is not a directory`);
        return -1;
      }
      dir = next;
    }
    return dir;
  }

  /** Adds one entry. For regular files, returns the inode whose chunks and size the caller fills; else -1. */
  add(entry: TarEntry): number {
    this.entries++;
    const t = this.table;
    const parts = pathComponents(entry.path);
    if (parts === null) {
      this.skipped.add(entry.path, "path leaves the root (..)");
      return -1;
    }
    if (parts.length > MAX_DEPTH) {
      this.skipped.add(entry.path, `deeper than ${MAX_DEPTH} directories`);
      return -1;
    }
    if (parts.length === 0) {
      // `./` describes the root itself.
      if (entry.type === "dir") {
        t.setMetadata(0, metadata(entry));
        t.setImplicit(0, false);
      }
      return -1;
    }
    const last = parts[parts.length - 1]!;
    if (parts.some((p, i) => p.startsWith(AUFS_META_PREFIX) && !(p === OPAQUE_MARKER && i === parts.length - 1))) return -1;
    // Every component, not just the last: a directory implied by the path gets its name from it.
    if (!parts.every(isValidName)) {
      this.skipped.add(entry.path, "invalid name");
      return -1;
    }
    const parent = this.#parent(parts, entry.path);
    if (parent === -1) return -1;

    if (last === OPAQUE_MARKER) {
      t.setOpaque(parent, true);
      return -1;
    }
    if (last.startsWith(WHITEOUT_PREFIX)) {
      const hidden = last.slice(WHITEOUT_PREFIX.length);
      if (!isValidName(hidden)) {
        this.skipped.add(entry.path, "whiteout of an invalid name");
        return -1;
      }
      const name = t.names.intern(hidden);
      const existing = t.child(parent, name);
      // A whiteout only hides lower layers; what this layer itself puts there stays.
      if (existing !== -1 && t.kind(existing) === KIND_DIR) t.setOpaque(existing, true);
      else if (existing === -1) t.link(parent, name, t.newInode(KIND_WHITEOUT, 0));
      return -1;
    }

    const name = t.names.intern(last);
    const existing = t.child(parent, name);
    const existingKind = existing === -1 ? 0 : t.kind(existing);
    if (entry.type === "dir") {
      if (existingKind === KIND_DIR) {
        t.setMetadata(existing, metadata(entry));
        t.setImplicit(existing, false);
      } else {
        const dir = newDir(t, false);
        t.setMetadata(dir, metadata(entry));
        t.setOpaque(dir, existingKind === KIND_WHITEOUT);
        t.link(parent, name, dir);
      }
      return -1;
    }

    if (entry.type === "hardlink") {
      const targetParts = pathComponents(entry.linkName);
      if (targetParts === null || targetParts.length === 0) {
        this.skipped.add(entry.path, `hardlink target ${JSON.stringify(entry.linkName)} leaves the root`);
        return -1;
      }
      const target = this.#find(targetParts);
      if (target !== -1 && (t.kind(target) === KIND_DIR || t.kind(target) === KIND_WHITEOUT)) {
        this.skipped.add(entry.path, "hardlink to a directory or a deleted file");
        return -1;
      }
      if (target === existing && target !== -1) return -1; // a link to itself changes nothing
      if (target !== -1) {
        t.link(parent, name, target);
      } else {
        // Not in this layer: a file of a lower layer, found when the layers are merged.
        const ref = t.newInode(KIND_HARDLINK_REF, 0);
        t.setTarget(ref, targetParts.join("/"));
        t.link(parent, name, ref);
      }
      return -1;
    }

    if (entry.type === "symlink" && entry.linkName === "") {
      this.skipped.add(entry.path, "symlink without a target");
      return -1;
    }
    const node = t.newInode(KINDS[entry.type], entry.mode);
    t.setMetadata(node, metadata(entry));
    if (entry.type === "symlink") t.setTarget(node, entry.linkName);
    if (entry.type === "char" || entry.type === "block") t.setDevice(node, entry.devMajor, entry.devMinor);
    if (entry.type === "file") t.beginChunks(node);
    t.link(parent, name, node);
    return entry.type === "file" ? node : -1;
  }

  /** The inode at `parts`, or -1. */
  #find(parts: string[]): number {
    const t = this.table;
    let node = 0;
    for (const part of parts) {
      if (t.kind(node) !== KIND_DIR) return -1;
      const name = t.names.lookup(part);
      if (name === -1) return -1;
      node = t.child(node, name);
      if (node === -1) return -1;
    }
    return node;
  }
}

const KINDS: Record<Exclude<TarEntry["type"], "dir" | "hardlink">, number> = { file: KIND_FILE, symlink: KIND_SYMLINK, char: KIND_CHAR, block: KIND_BLOCK, fifo: KIND_FIFO };

function newDir(t: TreeTable, implicit: boolean): number {
  const dir = t.newInode(KIND_DIR, 0o755);
  if (implicit) t.setImplicit(dir, true);
  return dir;
}

function metadata(entry: TarEntry) {
  return { perm: entry.mode & 0o7777, uid: entry.uid, gid: entry.gid, mtime: entry.mtime, mtimeNsec: entry.mtimeNsec, xattrs: entry.xattrs };
}
