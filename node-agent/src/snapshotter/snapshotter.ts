// An overlayfs snapshotter with containerd's semantics (snapshots/snapshotter.go): active snapshots
// are writable upper directories over their committed parents, views are read-only, commits freeze
// an active snapshot under a name. A layer that the skiff proxy can serve lazily is committed at
// Prepare, over a FUSE mount of that layer, and Prepare answers ALREADY_EXISTS: containerd then
// downloads nothing for it (lazy-layers.ts decides, and falls back to an ordinary snapshot).
//
// On disk: <root>/snapshots/<id>/fs (the tree, or a lazy layer's mountpoint) and /work (overlayfs'
// work directory), <root>/metadata.json (metadata.ts).
import { access, mkdir, readdir, rename, rm } from "node:fs/promises";
import { join } from "node:path";
import { diskUsage } from "./disk-usage.ts";
import { parseFilters } from "./filters.ts";
import { Metadata, type LazyLayerRecord, type SnapshotKind, type SnapshotRecord } from "./metadata.ts";
import type { Info, Kind, Mount } from "./snapshots-api.ts";

export type SnapshotErrorCode = "NOT_FOUND" | "ALREADY_EXISTS" | "FAILED_PRECONDITION" | "INVALID_ARGUMENT";

export class SnapshotError extends Error {
  constructor(
    readonly code: SnapshotErrorCode,
    message: string,
  ) {
    super(message);
  }
}

/** The label containerd's unpacker sets on Prepare with the layer's chain ID: "commit it yourself if you can". */
export const TARGET_LABEL = "containerd.io/snapshot.ref";

/** What the snapshotter needs to serve a layer lazily (lazy-layers.ts). */
export interface RemoteLayers {
  /**
   * Readies the layer that Prepare's labels describe at `mountpoint` and describes it, or answers
   * null (with the reason logged and counted) when it must be unpacked by containerd instead.
   */
  prepare(labels: Record<string, string>, mountpoint: string): Promise<{ lazy: LazyLayerRecord; size: number; inodes: number } | null>;
  /** Unmounts what prepare mounted. */
  release(mountpoint: string): Promise<void>;
}

const KIND_NAMES: Record<SnapshotKind, Kind> = { view: "VIEW", active: "ACTIVE", committed: "COMMITTED" };
// How List's filters spell a kind (containerd's Kind.String()).
const KIND_FILTER: Record<SnapshotKind, string> = { view: "view", active: "active", committed: "committed" };

export class Snapshotter {
  readonly root: string;
  readonly #meta: Metadata;
  readonly #remote: RemoteLayers | undefined;
  /** Ids of lazy layers being readied: their directories exist before their records. */
  readonly #preparing = new Set<string>();

  private constructor(root: string, meta: Metadata, remote: RemoteLayers | undefined) {
    this.root = root;
    this.#meta = meta;
    this.#remote = remote;
  }

  static async open(root: string, remote?: RemoteLayers): Promise<Snapshotter> {
    await mkdir(join(root, "snapshots"), { recursive: true });
    return new Snapshotter(root, await Metadata.open(root), remote);
  }

  /** Every snapshot, by key: what the mounts daemon must have mounted, for one. */
  records(): [string, SnapshotRecord][] {
    return Object.entries(this.#meta.state.snapshots);
  }

  fsDir(record: SnapshotRecord): string {
    return join(this.root, "snapshots", String(record.id), "fs");
  }

  async prepare(key: string, parent: string, labels: Record<string, string>): Promise<Mount[]> {
    const target = labels[TARGET_LABEL];
    if (target && this.#remote) {
      try {
        await this.#tryRemote(key, parent, labels, target);
      } catch (err) {
        if (!(err instanceof NotServed)) throw err;
      }
    }
    return this.#create("active", key, parent, labels);
  }

  view(key: string, parent: string, labels: Record<string, string>): Promise<Mount[]> {
    return this.#create("view", key, parent, labels);
  }

  mounts(key: string): Mount[] {
    const record = this.#require(key);
    if (record.kind === "committed") throw new SnapshotError("FAILED_PRECONDITION", `snapshot ${key} is committed: it has no mounts`);
    return this.#mountsOf(record);
  }

  async commit(name: string, key: string, labels: Record<string, string>): Promise<void> {
    checkKey(name);
    const record = this.#require(key);
    if (record.kind !== "active") throw new SnapshotError("FAILED_PRECONDITION", `snapshot ${key} is not active`);
    const usage = await diskUsage(this.fsDir(record));
    await this.#meta.change((s) => {
      if (Object.hasOwn(s.snapshots, name)) throw new SnapshotError("ALREADY_EXISTS", `snapshot ${name} already exists`);
      const active = s.snapshots[key];
      if (!active || active.kind !== "active") throw new SnapshotError("NOT_FOUND", `snapshot ${key} does not exist`);
      delete s.snapshots[key];
      const now = Date.now();
      s.snapshots[name] = { ...active, kind: "committed", labels: { ...labels }, created: now, updated: now, ...usage };
    });
  }

  async remove(key: string): Promise<void> {
    const removed = await this.#meta.change((s) => {
      const record = s.snapshots[key];
      if (!record || !Object.hasOwn(s.snapshots, key)) throw new SnapshotError("NOT_FOUND", `snapshot ${key} does not exist`);
      const child = Object.entries(s.snapshots).find(([, r]) => r.parent === key);
      if (child) throw new SnapshotError("FAILED_PRECONDITION", `snapshot ${key} has a child ${child[0]}`);
      delete s.snapshots[key];
      return record;
    });
    await this.#dispose(removed);
  }

  stat(key: string): Info {
    return infoOf(key, this.#require(key));
  }

  /** Labels are the only mutable field: `paths` empty or `labels` replaces them all, `labels.KEY` one. */
  async update(info: Info, paths: string[]): Promise<Info> {
    return this.#meta.change((s) => {
      const record = s.snapshots[info.name];
      if (!record || !Object.hasOwn(s.snapshots, info.name)) throw new SnapshotError("NOT_FOUND", `snapshot ${info.name} does not exist`);
      const given = info.labels ?? {};
      if (paths.length === 0 || paths.includes("labels")) record.labels = { ...given };
      for (const path of paths) {
        if (!path.startsWith("labels.")) {
          if (path !== "labels") throw new SnapshotError("INVALID_ARGUMENT", `cannot update ${path} of a snapshot: only its labels`);
          continue;
        }
        const label = path.slice("labels.".length);
        if (Object.hasOwn(given, label)) record.labels[label] = given[label]!;
        else delete record.labels[label];
      }
      record.updated = Date.now();
      return infoOf(info.name, record);
    });
  }

  list(filters: readonly string[]): Info[] {
    const matches = parseFilters(filters);
    return this.records()
      .filter(([key, r]) =>
        matches(([field, ...rest]) => {
          if (field === "name" && rest.length === 0) return key;
          if (field === "parent" && rest.length === 0) return r.parent;
          if (field === "kind" && rest.length === 0) return KIND_FILTER[r.kind];
          if (field === "labels" && rest.length > 0) return r.labels[rest.join(".")];
          return undefined;
        }),
      )
      .map(([key, r]) => infoOf(key, r));
  }

  async usage(key: string): Promise<{ size: number; inodes: number }> {
    const record = this.#require(key);
    if (record.kind === "committed" && record.size !== undefined) return { size: record.size, inodes: record.inodes ?? 0 };
    return diskUsage(this.fsDir(record));
  }

  /** Removes directories that no snapshot owns (left by a crash between a change and its directory). */
  async cleanup(): Promise<void> {
    const dir = join(this.root, "snapshots");
    // Decided in the metadata queue, so no snapshot being created (its directory made, its record
    // not yet written) looks orphaned; a lazy layer being readied is skipped by its id.
    const orphans = await this.#meta.change(async (s) => {
      const owned = new Set(Object.values(s.snapshots).map((r) => String(r.id)));
      return (await readdir(dir)).filter((name) => !owned.has(name) && !this.#preparing.has(name));
    });
    for (const name of orphans) await this.#clear(join(dir, name));
  }

  async #create(kind: "active" | "view", key: string, parent: string, labels: Record<string, string>): Promise<Mount[]> {
    checkKey(key);
    const record = await this.#meta.change(async (s) => {
      if (Object.hasOwn(s.snapshots, key)) throw new SnapshotError("ALREADY_EXISTS", `snapshot ${key} already exists`);
      this.#checkParent(s.snapshots, parent);
      const now = Date.now();
      const r: SnapshotRecord = { id: s.nextId++, kind, parent, labels: { ...labels }, created: now, updated: now };
      await this.#makeDirs(r);
      s.snapshots[key] = r;
      return r;
    });
    return this.#mountsOf(record);
  }

  /** Commits the layer lazily under its own name and answers ALREADY_EXISTS, or returns to be unpacked. */
  async #tryRemote(key: string, parent: string, labels: Record<string, string>, target: string): Promise<void> {
    // One name per layer and parent: containerd names parents per namespace, so one chain may have several.
    const parentId = parent ? (this.#meta.get(parent)?.id ?? 0) : 0;
    const name = `skiff-lazy/${parentId}/${target}`;
    const existing = this.#meta.get(name);
    if (existing && existing.parent === parent && existing.lazy) throw new SnapshotError("ALREADY_EXISTS", `layer ${target} is served lazily as ${name}`);
    if (existing || Object.hasOwn(this.#meta.state.snapshots, key)) return; // not ours to decide: let Prepare answer
    this.#checkParent(this.#meta.state.snapshots, parent);
    const id = await this.#meta.change((s) => s.nextId++);
    this.#preparing.add(String(id));
    try {
      await this.#commitRemote(name, { id, kind: "committed", parent, labels: { ...labels }, created: 0, updated: 0 });
    } finally {
      this.#preparing.delete(String(id));
    }
    throw new SnapshotError("ALREADY_EXISTS", `layer ${target} is served lazily as ${name}`);
  }

  /** Readies the layer in the skeleton's directory and records it as `name`; NotServed if the proxy has no lazy view of it. */
  async #commitRemote(name: string, skeleton: SnapshotRecord): Promise<void> {
    await this.#makeDirs(skeleton);
    const served = await this.#remote!.prepare(skeleton.labels, this.fsDir(skeleton)).catch(() => null);
    if (!served) {
      await rm(join(this.root, "snapshots", String(skeleton.id)), { recursive: true, force: true });
      throw new NotServed();
    }
    try {
      await this.#meta.change((s) => {
        if (Object.hasOwn(s.snapshots, name)) throw new SnapshotError("ALREADY_EXISTS", `snapshot ${name} already exists`);
        const now = Date.now();
        s.snapshots[name] = { ...skeleton, created: now, updated: now, lazy: served.lazy, size: served.size, inodes: served.inodes };
      });
    } catch (err) {
      await this.#dispose(skeleton);
      throw err;
    }
  }

  #checkParent(snapshots: Record<string, SnapshotRecord>, parent: string): void {
    if (!parent) return;
    const p = Object.hasOwn(snapshots, parent) ? snapshots[parent] : undefined;
    if (!p) throw new SnapshotError("NOT_FOUND", `parent snapshot ${parent} does not exist`);
    if (p.kind !== "committed") throw new SnapshotError("FAILED_PRECONDITION", `parent snapshot ${parent} is not committed`);
  }

  async #makeDirs(r: SnapshotRecord): Promise<void> {
    const dir = join(this.root, "snapshots", String(r.id));
    // A crash between making a snapshot's directory and writing its record leaves the directory
    // under an id that is handed out again: start empty, never with what it left.
    await this.#clear(dir);
    await mkdir(join(dir, "fs"), { recursive: true });
    if (r.kind === "active") await mkdir(join(dir, "work"), { recursive: true });
  }

  /** Deletes a directory no snapshot owns, unmounting a lazy layer left mounted in it first. */
  async #clear(dir: string): Promise<void> {
    if (!(await access(dir).then(() => true, () => false))) return;
    if (this.#remote) await this.#remote.release(join(dir, "fs")).catch(() => {});
    await rm(dir, { recursive: true, force: true });
  }

  /** Unmounts a lazy layer, then moves the directory out of the way and deletes it. */
  async #dispose(r: SnapshotRecord): Promise<void> {
    const dir = join(this.root, "snapshots", String(r.id));
    if (r.lazy && this.#remote) await this.#remote.release(this.fsDir(r));
    const doomed = `${dir}.removing`;
    await rename(dir, doomed).catch(() => {});
    await rm(doomed, { recursive: true, force: true });
  }

  #require(key: string): SnapshotRecord {
    const record = this.#meta.get(key);
    if (!record) throw new SnapshotError("NOT_FOUND", `snapshot ${key} does not exist`);
    return record;
  }

  /** The committed ancestors' trees, nearest first: overlayfs' lowerdir order. */
  #lowers(record: SnapshotRecord): string[] {
    const dirs: string[] = [];
    for (let p = record.parent; p; ) {
      const parent = this.#require(p);
      dirs.push(this.fsDir(parent));
      p = parent.parent;
    }
    return dirs;
  }

  #mountsOf(record: SnapshotRecord): Mount[] {
    const fs = this.fsDir(record);
    const lowers = this.#lowers(record);
    if (record.kind === "active") {
      if (lowers.length === 0) return [{ type: "bind", source: fs, options: ["rw", "rbind"] }];
      const work = join(this.root, "snapshots", String(record.id), "work");
      return [{ type: "overlay", source: "overlay", options: ["index=off", `workdir=${work}`, `upperdir=${fs}`, `lowerdir=${lowers.join(":")}`] }];
    }
    if (lowers.length <= 1) return [{ type: "bind", source: lowers[0] ?? fs, options: ["ro", "rbind"] }];
    return [{ type: "overlay", source: "overlay", options: ["index=off", `lowerdir=${lowers.join(":")}`] }];
  }
}

/** The layer is not served lazily: Prepare goes on with an ordinary snapshot. */
class NotServed extends Error {}

/** Keys are JSON object keys in the metadata file: never empty, never the one that means the prototype. */
function checkKey(key: string): void {
  if (!key || key === "__proto__") throw new SnapshotError("INVALID_ARGUMENT", `not a valid snapshot key: ${JSON.stringify(key)}`);
}

function infoOf(key: string, r: SnapshotRecord): Info {
  const ts = (ms: number) => ({ seconds: Math.floor(ms / 1000), nanos: (ms % 1000) * 1e6 });
  return { name: key, parent: r.parent, kind: KIND_NAMES[r.kind], created_at: ts(r.created), updated_at: ts(r.updated), labels: { ...r.labels } };
}
