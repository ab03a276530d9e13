// Builds one layer's file tree from its tar entries, keeping what the merge needs: whiteouts
// (`.wh.NAME`), opaque directories (`.wh..wh..opq`), directories the layer only implies, and
// hardlinks to files of lower layers. Paths are taken lexically: an entry is never placed through a
// symlink, and names that would leave the root are refused, so no tree built here can point outside.
import { baseNode, isValidName, newDir, type FsNode, type NodeType } from "../format/model.ts";
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
  readonly root: FsNode = newDir({ implicit: true });
  readonly skipped: SkippedEntry[] = [];
  entries = 0;

  /** The parent directory for `parts`, creating implied directories; null if a non-directory is in the way. */
  #parent(parts: string[], path: string): FsNode | null {
    let dir = this.root;
    for (const part of parts.slice(0, -1)) {
      let next = dir.children!.get(part);
      if (next?.type === "whiteout") {
        // Deleted below and recreated here as a directory: the new one hides the old.
        next = newDir({ implicit: true, opaque: true });
        dir.children!.set(part, next);
      } else if (!next) {
        next = newDir({ implicit: true });
        dir.children!.set(part, next);
      } else if (next.type !== "dir") {
        this.skipped.push({ path, reason: `parent ${part} is not a directory` });
        return null;
      }
      dir = next;
    }
    return dir;
  }

  /** Adds one entry. For regular files, returns the node whose `chunks` and `size` the caller fills. */
  add(entry: TarEntry): FsNode | null {
    this.entries++;
    const parts = pathComponents(entry.path);
    if (parts === null) {
      this.skipped.push({ path: entry.path, reason: "path leaves the root (..)" });
      return null;
    }
    if (parts.length > MAX_DEPTH) {
      this.skipped.push({ path: `${entry.path.slice(0, 200)}…`, reason: `deeper than ${MAX_DEPTH} directories` });
      return null;
    }
    if (parts.length === 0) {
      // `./` describes the root itself.
      if (entry.type === "dir") Object.assign(this.root, metadata(entry), { implicit: false });
      return null;
    }
    const name = parts[parts.length - 1]!;
    if (parts.some((p, i) => p.startsWith(AUFS_META_PREFIX) && !(p === OPAQUE_MARKER && i === parts.length - 1))) return null;
    // Every component, not just the last: a directory implied by the path gets its name from it.
    if (!parts.every(isValidName)) {
      this.skipped.push({ path: `${entry.path.slice(0, 1000)}${entry.path.length > 1000 ? "…" : ""}`, reason: "invalid name" });
      return null;
    }
    const parent = this.#parent(parts, entry.path);
    if (!parent) return null;
    const siblings = parent.children!;

    if (name === OPAQUE_MARKER) {
      parent.opaque = true;
      return null;
    }
    if (name.startsWith(WHITEOUT_PREFIX)) {
      const hidden = name.slice(WHITEOUT_PREFIX.length);
      if (!isValidName(hidden)) {
        this.skipped.push({ path: entry.path, reason: "whiteout of an invalid name" });
        return null;
      }
      const existing = siblings.get(hidden);
      // A whiteout only hides lower layers; what this layer itself puts there stays.
      if (existing?.type === "dir") existing.opaque = true;
      else if (!existing) siblings.set(hidden, baseNode("whiteout", 0));
      return null;
    }

    const existing = siblings.get(name);
    if (entry.type === "dir") {
      if (existing?.type === "dir") {
        Object.assign(existing, metadata(entry), { implicit: false });
      } else {
        siblings.set(name, newDir({ ...metadata(entry), opaque: existing?.type === "whiteout" }));
      }
      return null;
    }

    if (entry.type === "hardlink") {
      const targetParts = pathComponents(entry.linkName);
      if (targetParts === null || targetParts.length === 0) {
        this.skipped.push({ path: entry.path, reason: `hardlink target ${JSON.stringify(entry.linkName)} leaves the root` });
        return null;
      }
      const target = this.#find(targetParts);
      if (target && (target.type === "dir" || target.type === "whiteout")) {
        this.skipped.push({ path: entry.path, reason: "hardlink to a directory or a deleted file" });
        return null;
      }
      if (target === existing && target) return null; // a link to itself changes nothing
      if (target) {
        siblings.set(name, target);
      } else {
        // Not in this layer: a file of a lower layer, found when the layers are merged.
        const ref = { ...baseNode("hardlink-ref", 0), target: targetParts.join("/") };
        ref.size = new TextEncoder().encode(ref.target).length;
        siblings.set(name, ref);
      }
      return null;
    }

    const node: FsNode = { ...baseNode(nodeType(entry.type), entry.mode & 0o7777), ...metadata(entry) };
    if (entry.type === "symlink") {
      if (entry.linkName === "") {
        this.skipped.push({ path: entry.path, reason: "symlink without a target" });
        return null;
      }
      node.target = entry.linkName;
      node.size = new TextEncoder().encode(entry.linkName).length;
    }
    if (entry.type === "char" || entry.type === "block") {
      node.devMajor = entry.devMajor;
      node.devMinor = entry.devMinor;
    }
    siblings.set(name, node);
    return entry.type === "file" ? node : null;
  }

  #find(parts: string[]): FsNode | null {
    let node: FsNode | undefined = this.root;
    for (const part of parts) {
      if (node?.type !== "dir") return null;
      node = node.children!.get(part);
    }
    return node ?? null;
  }
}

function metadata(entry: TarEntry): Pick<FsNode, "perm" | "uid" | "gid" | "mtime" | "mtimeNsec" | "xattrs"> {
  return { perm: entry.mode & 0o7777, uid: entry.uid, gid: entry.gid, mtime: entry.mtime, mtimeNsec: entry.mtimeNsec, xattrs: new Map(entry.xattrs) };
}

function nodeType(t: TarEntry["type"]): NodeType {
  return t === "hardlink" ? "file" : t;
}
