// The last few chunks a reader used, verified and in memory. The kernel asks for 1 MiB at most, and
// seldom on chunk boundaries, so a sequential reader asks for the same chunk more than once in a
// row: without this, each ask reads and hashes the whole chunk again. Loads in progress are shared,
// so two reads of one chunk arriving together cost one load.
//
// Chunks read from the node's cache may lie in the chunk slab (chunk-slab.ts), whose slots are
// reused. So what get() answers is held for the caller, who gives it back with release() once done
// with the bytes (a read: once its reply is sent); this memory holds its own reference while it
// keeps a chunk. Bytes outside the slab need no giving back, and release() ignores them.
import { releaseChunk, retainChunk } from "./chunk-slab.ts";

interface Entry {
  bytes: Promise<Uint8Array | null>;
  /** The bytes once loaded; `size` is -1 until then. */
  value: Uint8Array | undefined;
  size: number;
  /** Callers of get() waiting for the load: the entry is not dropped before they hold the bytes. */
  waiting: number;
}

export class RecentChunks {
  readonly #maxBytes: number;
  // Insertion order is recency order.
  readonly #entries = new Map<string, Entry>();
  #bytes = 0;

  /** Keeps up to `maxBytes` of chunks (always at least the last one); 16 MiB by default. */
  constructor(maxBytes = 16 * 1024 * 1024) {
    this.#maxBytes = maxBytes;
  }

  /**
   * The chunk named `key`: from memory, or from `load`, whose answer (held for this memory) is kept
   * unless it fails or is null. The bytes answered are held for the caller: see release().
   */
  get(key: string, load: () => Promise<Uint8Array | null>): Promise<Uint8Array | null> {
    const known = this.#entries.get(key);
    if (known !== undefined) {
      this.#entries.delete(key);
      this.#entries.set(key, known);
      if (known.value) {
        retainChunk(known.value);
        return Promise.resolve(known.value);
      }
      return this.#await(known);
    }
    const entry: Entry = { bytes: load(), value: undefined, size: -1, waiting: 0 };
    this.#entries.set(key, entry);
    entry.bytes.then(
      (bytes) => (bytes === null ? this.#forget(key, entry) : this.#settle(key, entry, bytes)),
      () => this.#forget(key, entry),
    );
    return this.#await(entry);
  }

  /** Remembers bytes that arrived another way (fetched from the proxy). */
  put(key: string, bytes: Uint8Array): void {
    const known = this.#entries.get(key);
    if (known !== undefined) this.#forget(key, known);
    retainChunk(bytes);
    const entry: Entry = { bytes: Promise.resolve(bytes), value: undefined, size: -1, waiting: 0 };
    this.#entries.set(key, entry);
    this.#settle(key, entry, bytes);
  }

  /** Gives back bytes that get() answered. */
  release(bytes: Uint8Array): void {
    releaseChunk(bytes);
  }

  /** The entry's bytes once loaded, held for the caller before anything can drop them. */
  #await(entry: Entry): Promise<Uint8Array | null> {
    entry.waiting++;
    return entry.bytes.then(
      (bytes) => {
        entry.waiting--;
        if (bytes) retainChunk(bytes);
        return bytes;
      },
      (err: unknown) => {
        entry.waiting--;
        throw err;
      },
    );
  }

  #settle(key: string, entry: Entry, bytes: Uint8Array): void {
    // Replaced or forgotten meanwhile: this memory's reference goes.
    if (this.#entries.get(key) !== entry) return releaseChunk(bytes);
    entry.value = bytes;
    entry.size = bytes.byteLength;
    this.#bytes += entry.size;
    // Oldest settled entries first; loads in progress, entries still being handed out and the newest stay.
    for (const [oldKey, oldest] of this.#entries) {
      if (this.#bytes <= this.#maxBytes) break;
      if (oldest !== entry && oldest.size >= 0 && oldest.waiting === 0) this.#forget(oldKey, oldest);
    }
  }

  #forget(key: string, entry: Entry): void {
    if (this.#entries.get(key) !== entry) return;
    this.#entries.delete(key);
    if (entry.size > 0) this.#bytes -= entry.size;
    if (entry.value) releaseChunk(entry.value);
  }
}
