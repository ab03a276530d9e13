// The snapshotter's record of its snapshots, kept in one JSON file that is replaced durably
// (durable-file.ts) after every change: a kill at any instant leaves the old or the new record.
// Changes are applied one at a time, in order.
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { writeFileDurably } from "./durable-file.ts";

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
      await writeFileDurably(this.#path, JSON.stringify(draft));
      this.#state = draft;
      return result;
    });
    this.#queue = next.catch(() => {});
    return next;
  }
}
