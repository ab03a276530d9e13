// The last few chunks a reader used, verified and in memory. A FUSE read asks for 128 KiB at most
// while a chunk is 64 KiB to 16 MiB, so a sequential reader asks for the same chunk many times in a
// row: without this, each ask reads and hashes the whole chunk again. Loads in progress are shared,
// so two reads of one chunk arriving together cost one load.
export class RecentChunks {
  readonly #maxBytes: number;
  // Insertion order is recency order. `size` is -1 while the load is in progress.
  readonly #entries = new Map<string, { bytes: Promise<Uint8Array | null>; size: number }>();
  #bytes = 0;

  /** Keeps up to `maxBytes` of chunks (always at least the last one); 16 MiB by default. */
  constructor(maxBytes = 16 * 1024 * 1024) {
    this.#maxBytes = maxBytes;
  }

  /** The chunk named `key`: from memory, or from `load`, whose answer is kept unless it fails or is null. */
  get(key: string, load: () => Promise<Uint8Array | null>): Promise<Uint8Array | null> {
    const known = this.#entries.get(key);
    if (known !== undefined) {
      this.#entries.delete(key);
      this.#entries.set(key, known);
      return known.bytes;
    }
    const entry = { bytes: load(), size: -1 };
    this.#entries.set(key, entry);
    entry.bytes.then(
      (bytes) => (bytes === null ? this.#forget(key, entry) : this.#settle(key, entry, bytes.byteLength)),
      () => this.#forget(key, entry),
    );
    return entry.bytes;
  }

  /** Remembers bytes that arrived another way (fetched from the proxy). */
  put(key: string, bytes: Uint8Array): void {
    const known = this.#entries.get(key);
    if (known !== undefined) this.#forget(key, known);
    const entry = { bytes: Promise.resolve<Uint8Array | null>(bytes), size: -1 };
    this.#entries.set(key, entry);
    this.#settle(key, entry, bytes.byteLength);
  }

  #settle(key: string, entry: { size: number }, size: number): void {
    if (this.#entries.get(key) !== entry) return; // replaced or forgotten meanwhile
    entry.size = size;
    this.#bytes += size;
    // Oldest settled entries first; loads in progress stay, and so does the newest entry.
    for (const [oldKey, oldest] of this.#entries) {
      if (this.#bytes <= this.#maxBytes) break;
      if (oldest !== entry && oldest.size >= 0) this.#forget(oldKey, oldest);
    }
  }

  #forget(key: string, entry: { size: number }): void {
    if (this.#entries.get(key) !== entry) return;
    this.#entries.delete(key);
    if (entry.size > 0) this.#bytes -= entry.size;
  }
}
