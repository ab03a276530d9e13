// A store kept within a size bound (`skiff serve --max-store-size`). Around another store, it keeps
// the size of every object in memory (listed once at start) and, before a write would pass the
// bound, evicts whatever has gone unused longest. It evicts by unit (./keys.ts `evictionUnit`): a
// blob, a converted layer's data and bootstrap together, an image bootstrap, a learned list.
// Manifests, tags and links are never evicted, nor a unit being written or read.
// The bound counts object sizes plus writes in progress, so the store stays within it at all times;
// a write that can't fit even after evicting all that may go fails with StoreFullError, which the
// proxy already answers without losing anything (the blob is served, uncached).
// What was evicted is fetched or converted again when asked for: nothing above this layer
// remembers an object without checking for it (the app forgets its in-memory entries on eviction).
import { onStreamEnd } from "../util/streams.ts";
import { evictionUnit } from "./keys.ts";
import { listAll, StoreFullError, type ByteSpan, type ContentStore, type ListedObject, type Upload, type Versioned } from "./store.ts";

export interface BoundedStoreOptions {
  maxBytes: number;
  /** Units unused for this long are evicted by sweepAged(), room or not. */
  maxAgeMs?: number;
  now?: () => number;
  log?: (message: string) => void;
  /** The inner store's objects, when the caller has listed them already (at start, for a sweep). */
  listed?: ListedObject[];
}

export interface StoreUsage {
  bytes: number;
  objects: number;
  maxBytes: number;
  /** Units evicted, and their bytes, since start. */
  evictions: number;
  evictedBytes: number;
  /** Units written again after this process evicted them: fetched or converted again. */
  restored: number;
}

interface Unit {
  /** Key → size, in the order written: evicted newest first (a layer's bootstrap before its data). */
  keys: Map<string, number>;
  bytes: number;
  usedMs: number;
  /** Which use of the store was its last: the order of eviction (times can tie). */
  lastUse: number;
}

/** Evicted units remembered, to count those written again. */
const REMEMBERED_EVICTIONS = 10_000;

export class BoundedStore implements ContentStore {
  readonly #inner: ContentStore;
  readonly #max: number;
  readonly #maxAgeMs: number | undefined;
  readonly #now: () => number;
  readonly #log: (message: string) => void;
  /** Evictable units, each with the time it was last used. */
  readonly #units = new Map<string, Unit>();
  /** Sizes of the keys never evicted. */
  readonly #fixed = new Map<string, number>();
  /** Units being written or read, with how many writes and reads each: not evicted meanwhile. */
  readonly #busy = new Map<string, number>();
  readonly #evicted = new Set<string>();
  /** Keys never evicted although their kind may be (keep()). */
  readonly #kept = new Set<string>();
  readonly #listeners: ((keys: string[]) => void)[] = [];
  #bytes = 0;
  #objects = 0;
  /** Bytes written by uploads not yet committed. */
  #reserved = 0;
  /** Uses so far (reads and writes of evictable units), counted to order them. */
  #uses = 0;
  #evictions = 0;
  #evictedBytes = 0;
  #restored = 0;

  readonly getVersioned?: (key: string) => Promise<Versioned | null>;
  readonly putIfVersion?: (key: string, bytes: Uint8Array, expected: string | null) => Promise<string | null>;
  readonly readSpan?: (key: string, span: ByteSpan, into?: Uint8Array<ArrayBuffer>) => Promise<Uint8Array<ArrayBuffer> | null>;

  private constructor(inner: ContentStore, o: BoundedStoreOptions) {
    this.#inner = inner;
    this.#max = o.maxBytes;
    this.#maxAgeMs = o.maxAgeMs;
    this.#now = o.now ?? Date.now;
    this.#log = o.log ?? (() => {});
    if (inner.readSpan) {
      // Not held like a stream: one short read, of what was just made the most recently used, the
      // last unit an eviction would take. The range fast path comes here: it pays for a touch only.
      this.readSpan = (key, span, into) => {
        this.#touch(key);
        return inner.readSpan!(key, span, into);
      };
    }
    if (inner.getVersioned && inner.putIfVersion) {
      this.getVersioned = (key) => inner.getVersioned!(key);
      this.putIfVersion = async (key, bytes, expected) => {
        const version = await inner.putIfVersion!(key, bytes, expected);
        if (version !== null) this.#record(key, bytes.byteLength);
        return version;
      };
    }
  }

  /** The store around `inner`, whose objects are listed now; evicts at once if they are over the bound. */
  static async open(inner: ContentStore, o: BoundedStoreOptions): Promise<BoundedStore> {
    if (!inner.list) throw new Error("a bounded store needs a store that can list its objects");
    const store = new BoundedStore(inner, o);
    const listed = o.listed ? [...o.listed] : await listAll(inner);
    listed.sort((a, b) => a.modifiedMs - b.modifiedMs);
    for (const { key, size, modifiedMs } of listed) store.#add(key, size, modifiedMs);
    await store.#reserve(0, "the store as found at start").catch((err: unknown) => {
      // What can't be evicted (manifests, tags, links) is over the bound: serve anyway, caching less.
      if (!(err instanceof StoreFullError)) throw err;
      store.#log(`store: ${store.#bytes} bytes that are never evicted are over the bound of ${store.#max}`);
    });
    return store;
  }

  /** Called with the keys of every unit evicted, as it is evicted: for caches of what the store holds. */
  watchEvictions(listener: (keys: string[]) => void): void {
    this.#listeners.push(listener);
  }

  /**
   * Never evicts `key` from now on, stored yet or not: what the store's layout can't tell apart
   * from what may go (an image's config is a blob like its layers). Not remembered across restarts.
   */
  keep(key: string): void {
    if (this.#kept.has(key)) return;
    const size = this.#units.get(evictionUnit(key) ?? "")?.keys.get(key);
    if (size !== undefined) this.#remove(key);
    this.#kept.add(key);
    if (size !== undefined) this.#add(key, size, this.#now());
  }

  usage(): StoreUsage {
    return { bytes: this.#bytes, objects: this.#objects, maxBytes: this.#max, evictions: this.#evictions, evictedBytes: this.#evictedBytes, restored: this.#restored };
  }

  async stat(key: string) {
    const info = await this.#inner.stat(key);
    if (info) this.#touch(key);
    return info;
  }

  async get(key: string, span?: ByteSpan): Promise<ReadableStream<Uint8Array> | null> {
    const unit = this.#touch(key);
    if (unit === null) return this.#inner.get(key, span);
    this.#hold(unit);
    const body = await this.#inner.get(key, span).catch((err: unknown) => {
      this.#release(unit);
      throw err;
    });
    if (!body) this.#release(unit);
    return body && onStreamEnd(body, () => this.#release(unit));
  }

  async put(key: string): Promise<Upload> {
    const upload = await this.#inner.put(key);
    const unit = this.#unitOf(key);
    if (unit !== null) this.#hold(unit);
    let written = 0;
    let open = true;
    const finish = () => {
      if (!open) return;
      open = false;
      this.#reserved -= written;
      if (unit !== null) this.#release(unit);
    };
    return {
      write: async (chunk) => {
        await this.#reserve(chunk.byteLength, key);
        written += chunk.byteLength;
        await upload.write(chunk);
      },
      commit: async () => {
        try {
          await upload.commit();
        } finally {
          finish(); // a failed commit has discarded the upload: callers need not cancel it
        }
        this.#record(key, written);
      },
      cancel: async () => {
        finish();
        await upload.cancel();
      },
    };
  }

  async delete(key: string): Promise<void> {
    await this.#inner.delete(key);
    this.#remove(key);
  }

  list(prefix?: string): AsyncIterable<ListedObject> {
    return this.#inner.list!(prefix);
  }

  /** Evicts the units not used for longer than the store's max age; how many. */
  async sweepAged(): Promise<number> {
    if (this.#maxAgeMs === undefined) return 0;
    const before = this.#now() - this.#maxAgeMs;
    const deletes: Promise<void>[] = [];
    for (const [name, unit] of this.#units) if (unit.usedMs < before && !this.#busy.has(name)) deletes.push(this.#evict(name, unit));
    await Promise.all(deletes);
    return deletes.length;
  }

  /**
   * Reserves `bytes` for a write, evicting least recently used units until they fit and 1 % of the
   * bound is free besides, so that the next writes need not look for victims again; throws
   * StoreFullError when they can't fit. The room is taken at once, before the deletes finish, so two
   * writes can't both count on it; the write waits for them, so the disk holds no more than the bound.
   */
  async #reserve(bytes: number, what: string): Promise<void> {
    const excess = () => this.#bytes + this.#reserved + bytes - this.#max;
    const deletes: Promise<void>[] = [];
    if (excess() > 0) {
      // Sorted only now: a use marks its unit with the time alone, which keeps reads cheap.
      const victims = [...this.#units].filter(([name]) => !this.#busy.has(name)).sort(([, a], [, b]) => a.lastUse - b.lastUse);
      const slack = Math.floor(this.#max / 100);
      for (const [name, unit] of victims) {
        if (excess() <= -slack) break;
        deletes.push(this.#evict(name, unit));
      }
    }
    if (excess() > 0) {
      await Promise.all(deletes);
      throw new StoreFullError(what, `over --max-store-size ${this.#max} bytes with everything else in use`);
    }
    this.#reserved += bytes;
    await Promise.all(deletes);
  }

  /** Takes the unit out of the accounting at once, then deletes its objects. */
  #evict(name: string, unit: Unit): Promise<void> {
    this.#units.delete(name);
    this.#bytes -= unit.bytes;
    this.#objects -= unit.keys.size;
    this.#evictions++;
    this.#evictedBytes += unit.bytes;
    this.#evicted.add(name);
    if (this.#evicted.size > REMEMBERED_EVICTIONS) this.#evicted.delete(this.#evicted.values().next().value!);
    const keys = [...unit.keys.keys()].reverse();
    for (const listener of this.#listeners) listener(keys);
    return (async () => {
      for (const key of keys) await this.#inner.delete(key).catch((err: unknown) => this.#log(`store: could not evict ${key}: ${(err as Error).message}`));
    })();
  }

  /** Marks the key's unit used now; its unit, or null for a key never evicted. */
  #touch(key: string): string | null {
    const name = this.#unitOf(key);
    if (name === null) return null;
    const unit = this.#units.get(name);
    if (unit) {
      unit.usedMs = this.#now();
      unit.lastUse = ++this.#uses;
    }
    return name;
  }

  #unitOf(key: string): string | null {
    return this.#kept.has(key) ? null : evictionUnit(key);
  }

  #hold(unit: string): void {
    this.#busy.set(unit, (this.#busy.get(unit) ?? 0) + 1);
  }

  #release(unit: string): void {
    const n = this.#busy.get(unit)! - 1;
    if (n > 0) this.#busy.set(unit, n);
    else this.#busy.delete(unit);
  }

  /** A committed write: replaces whatever the key held. */
  #record(key: string, size: number): void {
    this.#remove(key);
    const name = this.#unitOf(key);
    if (name !== null && this.#evicted.delete(name)) this.#restored++;
    this.#add(key, size, this.#now());
  }

  #add(key: string, size: number, usedMs: number): void {
    this.#bytes += size;
    this.#objects++;
    const name = this.#unitOf(key);
    if (name === null) {
      this.#fixed.set(key, size);
      return;
    }
    const unit = this.#units.get(name) ?? { keys: new Map(), bytes: 0, usedMs, lastUse: 0 };
    unit.keys.set(key, size);
    unit.bytes += size;
    unit.usedMs = Math.max(unit.usedMs, usedMs);
    unit.lastUse = ++this.#uses;
    this.#units.set(name, unit);
  }

  #remove(key: string): void {
    const fixed = this.#fixed.get(key);
    if (fixed !== undefined) {
      this.#fixed.delete(key);
      this.#bytes -= fixed;
      this.#objects--;
      return;
    }
    const name = this.#unitOf(key);
    const unit = name === null ? undefined : this.#units.get(name);
    const size = unit?.keys.get(key);
    if (!unit || size === undefined) return;
    unit.keys.delete(key);
    unit.bytes -= size;
    this.#bytes -= size;
    this.#objects--;
    if (unit.keys.size === 0) this.#units.delete(name!);
  }
}
