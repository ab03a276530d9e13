// Sibling prefetch: a program that had to wait for two small files of one kind in one directory
// (Python importing a package's modules from its __pycache__, say) is likely to read more of them,
// each a round trip of its own. So the directory's other small files with that extension are then
// fetched in the background, in the order they are stored, a small batch at a time: a foreground
// read that misses meanwhile finds at most one batch ahead of it on the link.
import type { Bootstrap } from "../../src/format/decode.ts";
import type { WantedChunk } from "./chunk-fetcher.ts";

export interface SiblingPrefetchOptions {
  /** Whether the chunk-table entry is in the node's cache already (then it is not fetched). */
  has(chunkIndex: number): boolean;
  /** Fetches and caches chunks in the background; settles when they are in (or failed). */
  fetch(wanted: WantedChunk[]): Promise<void>;
  /** Where each chunk-table entry is stored in its layer's data blob (the order to fetch in). */
  storedPosition(): Int32Array;
}

/** Only files this small count, and are fetched: modules, scripts, not the libraries beside them. */
export const SIBLING_MAX_FILE_BYTES = 256 * 2 ** 10;
/** Stored bytes fetched for one directory and extension at most. */
const MAX_GROUP_BYTES = 2 * 2 ** 20;
/** Stored bytes fetched for siblings by one reader at most. */
const MAX_TOTAL_BYTES = 32 * 2 ** 20;
/** Stored bytes per background request: 10 ms of a 100 Mbit/s link. */
const BATCH_BYTES = 128 * 2 ** 10;
/** Misses in one group that start its prefetch. */
const MISSES_TO_START = 2;

export class SiblingPrefetch {
  readonly #b: Bootstrap;
  readonly #o: SiblingPrefetchOptions;
  /** Files that missed, per directory and extension; a group once started is kept with no files. */
  readonly #groups = new Map<string, Set<number> | "started">();
  /** Chunk-table entries to fetch, in order. */
  readonly #queue: number[] = [];
  #budget = MAX_TOTAL_BYTES;
  #pumping = false;

  constructor(bootstrap: Bootstrap, options: SiblingPrefetchOptions) {
    this.#b = bootstrap;
    this.#o = options;
  }

  /**
   * A foreground read of `inode` had to wait for the proxy. With `start` false the miss is only
   * counted: a later one, allowed to start, then starts the group.
   */
  missed(inode: number, start = true): void {
    if (this.#budget <= 0) return;
    const ino = this.#b.inode(inode);
    if (ino.type !== "file" || ino.size > SIBLING_MAX_FILE_BYTES) return;
    const dir = this.#b.parentOf(inode);
    const name = this.#b.readdir(dir).find((e) => e.inode === inode)?.name;
    if (name === undefined) return;
    const ext = extensionOf(name);
    const key = `${dir}/${ext}`;
    let group = this.#groups.get(key);
    if (group === "started") return;
    if (!group) this.#groups.set(key, (group = new Set()));
    group.add(inode);
    if (group.size < MISSES_TO_START || !start) return;
    this.#groups.set(key, "started");
    this.#enqueue(dir, ext);
  }

  /** The group's files not cached, in stored order, within the group's bound and what is left of the reader's. */
  #enqueue(dir: number, ext: string): void {
    const chunks = new Set<number>();
    for (const entry of this.#b.readdir(dir)) {
      const ino = this.#b.inode(entry.inode);
      if (ino.type !== "file" || ino.size === 0 || ino.size > SIBLING_MAX_FILE_BYTES || extensionOf(entry.name) !== ext) continue;
      for (const index of this.#b.chunkIndexes(entry.inode)) if (!this.#o.has(index)) chunks.add(index);
    }
    const position = this.#o.storedPosition();
    const bound = Math.min(MAX_GROUP_BYTES, this.#budget);
    let bytes = 0;
    for (const index of [...chunks].sort((x, y) => position[x]! - position[y]!)) {
      const size = this.#b.chunk(index).storedSize;
      if (bytes + size > bound) break;
      bytes += size;
      this.#queue.push(index);
    }
    this.#budget -= bytes;
    void this.#pump();
  }

  /** One batch in flight at a time, until the queue is empty. */
  async #pump(): Promise<void> {
    if (this.#pumping) return;
    this.#pumping = true;
    try {
      while (this.#queue.length > 0) {
        const batch: WantedChunk[] = [];
        let bytes = 0;
        while (this.#queue.length > 0) {
          const record = this.#b.chunk(this.#queue[0]!);
          if (batch.length > 0 && bytes + record.storedSize > BATCH_BYTES) break;
          // Read (or fetched nearby) meanwhile: skipped.
          if (!this.#o.has(this.#queue.shift()!)) {
            batch.push({ record, layerDigest: this.#b.blob(record.blob).layerDigest });
            bytes += record.storedSize;
          }
        }
        if (batch.length > 0) await this.#o.fetch(batch);
      }
    } finally {
      this.#pumping = false;
    }
  }
}

/** What follows a name's last dot (`.cpython-313.pyc` counts as `pyc`); "" when none. */
function extensionOf(name: string): string {
  const dot = name.lastIndexOf(".");
  return dot > 0 ? name.slice(dot + 1) : "";
}
