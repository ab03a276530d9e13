// The snapshotter's record of its snapshots, kept in one JSON file that is replaced atomically (temp
// file, fsync, rename, fsync of the directory) after every change: a kill at any instant leaves the
// old or the new record, never a torn one. Changes are applied one at a time, in order.
import { open, readFile, rename } from "node:fs/promises";
import { dirname, join } from "node:path";

export type SnapshotKind = "view" | "active" | "committed";

export interface SnapshotRecord {
  /** Names the snapshot's directory under snapshots/; never reused. */
  id: number;
  kind: SnapshotKind;
  /** The parent's key (a committed snapshot), or "" for none. */
  parent: string;
  labels: Record<string, string>;
  /** Milliseconds since the epoch. */
  created: number;
  updated: number;
  /** Committed snapshots: bytes and inodes used, measured at commit. */
  size?: number;
  inodes?: number;
  /** A layer served lazily: its fs directory is a mount of this layer (see lazy-layers.ts). */
  lazy?: LazyLayerRecord;
}

export interface LazyLayerRecord {
  proxy: string;
  /** The repository on the proxy, and its registry (`?ns=`) when the proxy mirrors several. */
  name: string;
  ns?: string;
  layerDigest: string;
  /** `Skiff-Params` of the conversion. */
  params: string;
  imageRef: string;
}

export interface MetadataState {
  nextId: number;
  snapshots: Record<string, SnapshotRecord>;
}

const FILE = "metadata.json";

export class Metadata {
  readonly #path: string;
  #state: MetadataState;
  #queue: Promise<unknown> = Promise.resolve();

  private constructor(path: string, state: MetadataState) {
    this.#path = path;
    this.#state = state;
  }

  static async open(root: string): Promise<Metadata> {
    const path = join(root, FILE);
    let state: MetadataState = { nextId: 1, snapshots: {} };
    try {
      state = JSON.parse(await readFile(path, "utf8")) as MetadataState;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw new Error(`cannot read ${path}: ${(err as Error).message}`);
    }
    return new Metadata(path, state);
  }

  /** The current state; callers must not change it (use `change`). */
  get state(): Readonly<MetadataState> {
    return this.#state;
  }

  get(key: string): SnapshotRecord | undefined {
    return Object.hasOwn(this.#state.snapshots, key) ? this.#state.snapshots[key] : undefined;
  }

  /**
   * Runs `fn` on a copy of the state after every change before it, then makes the copy durable and
   * current. If `fn` throws, nothing changes.
   */
  change<T>(fn: (state: MetadataState) => T | Promise<T>): Promise<T> {
    const next = this.#queue.then(async () => {
      const draft = structuredClone(this.#state);
      const result = await fn(draft);
      await this.#write(draft);
      this.#state = draft;
      return result;
    });
    this.#queue = next.catch(() => {});
    return next;
  }

  async #write(state: MetadataState): Promise<void> {
    const tmp = `${this.#path}.tmp`;
    const file = await open(tmp, "w");
    try {
      await file.writeFile(JSON.stringify(state));
      await file.sync();
    } finally {
      await file.close();
    }
    await rename(tmp, this.#path);
    const dir = await open(dirname(this.#path), "r");
    try {
      await dir.sync();
    } finally {
      await dir.close();
    }
  }
}
