// The node's chunk cache: one directory shared by every image, one file per chunk named by the
// sha256 of its uncompressed bytes. Bytes are verified on the way in and again on the way out, and
// written to a temp file then renamed, so a crash mid-write leaves either nothing or a stray temp
// file (removed at open) — never a half-written chunk under its real name.
import { mkdir, readdir, rename, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { HEX_DIGEST, sha256Hex } from "./sha256-hex.ts";
import { readVerified, type VerifiedRead } from "./verified-file-read.ts";

const TEMP_PREFIX = ".tmp-";
/** Names this process's temp files apart (with its pid): cheaper than random bytes per chunk. */
let tempCount = 0;

export interface ChunkCacheOptions {
  /** Evict least recently used chunks once the cache holds more than this many bytes. */
  maxBytes?: number;
}

export interface ChunkCacheStats {
  entries: number;
  bytes: number;
  maxBytes: number;
  hits: number;
  misses: number;
  evictions: number;
  /** Files that failed verification on read and were deleted. */
  corrupt: number;
}

export class ChunkCache {
  readonly dir: string;
  readonly maxBytes: number;
  // Insertion order is recency order: a touched entry is deleted and re-inserted at the end.
  readonly #sizes = new Map<string, number>();
  #bytes = 0;
  /** Chunks with a read in progress, and how many: eviction passes them over. */
  readonly #reading = new Map<string, number>();
  /**
   * Chunks being written, served from memory until they are on disk: a read right behind the
   * prefetch that fetched a chunk would otherwise miss it and fetch it again.
   */
  readonly #landing = new Map<string, { bytes: Uint8Array; stored: Promise<void> }>();
  #hits = 0;
  #misses = 0;
  #evictions = 0;
  #corrupt = 0;

  private constructor(dir: string, maxBytes: number) {
    this.dir = dir;
    this.maxBytes = maxBytes;
  }

  /** Opens (creating) the directory, drops leftover temp files, and indexes the chunks in it, oldest first. */
  static async open(dir: string, options: ChunkCacheOptions = {}): Promise<ChunkCache> {
    const maxBytes = options.maxBytes ?? Number.MAX_SAFE_INTEGER;
    if (!(maxBytes > 0)) throw new RangeError(`cache size limit must be positive, got ${maxBytes}`);
    await mkdir(dir, { recursive: true });
    const cache = new ChunkCache(dir, maxBytes);
    const found: { hex: string; size: number; used: number }[] = [];
    for (const name of await readdir(dir)) {
      const path = join(dir, name);
      if (name.startsWith(TEMP_PREFIX)) {
        await rm(path, { force: true });
        continue;
      }
      if (!HEX_DIGEST.test(name)) continue;
      const st = await stat(path).catch(() => null);
      if (st?.isFile()) found.push({ hex: name, size: st.size, used: Math.max(st.atimeMs, st.mtimeMs) });
    }
    found.sort((a, b) => a.used - b.used);
    for (const f of found) cache.#add(f.hex, f.size);
    await cache.#evict();
    return cache;
  }

  /** Whether the chunk is cached, or on its way to the disk. */
  has(hex: string): boolean {
    return this.#sizes.has(hex) || this.#landing.has(hex);
  }

  /**
   * The chunk's bytes, verified; null when absent or when the file no longer matches its name (then
   * it is deleted). The file is read and hashed on a worker thread (verified-file-read.ts): every
   * read from disk is checked, without the hash costing this thread. The bytes may lie in the chunk
   * slab: the caller holds them, and gives them back with releaseChunk (chunk-slab.ts) when done.
   */
  async get(hex: string): Promise<Uint8Array | null> {
    const landing = this.#landing.get(hex);
    if (landing) {
      this.#hits++;
      return landing.bytes;
    }
    if (!HEX_DIGEST.test(hex) || !this.#sizes.has(hex)) {
      this.#misses++;
      return null;
    }
    let found: VerifiedRead;
    this.#reading.set(hex, (this.#reading.get(hex) ?? 0) + 1);
    try {
      found = await readVerified(this.#path(hex), hex, this.#sizes.get(hex));
    } catch {
      // The worker failed, not the file: a miss (the chunk is fetched again), the file kept.
      this.#misses++;
      return null;
    } finally {
      const n = this.#reading.get(hex)! - 1;
      if (n === 0) this.#reading.delete(hex);
      else this.#reading.set(hex, n);
    }
    if (found.status === "missing") {
      this.#remove(hex);
      this.#misses++;
      return null;
    }
    if (found.status === "corrupt") {
      this.#corrupt++;
      this.#misses++;
      this.#remove(hex);
      await rm(this.#path(hex), { force: true });
      return null;
    }
    this.#touch(hex);
    this.#hits++;
    return found.bytes;
  }

  /**
   * Stores verified bytes under their digest; rejects bytes that are not what `hex` names, unless
   * the caller has just checked them itself (`verified`: the fetcher's chunks, hashed as they came).
   * From the call on, get() answers with them (`bytes` must not change afterwards).
   */
  async put(hex: string, bytes: Uint8Array, { verified = false } = {}): Promise<void> {
    if (!HEX_DIGEST.test(hex)) throw new Error(`not a sha256 hex digest: ${JSON.stringify(hex)}`);
    if (!verified && sha256Hex(bytes) !== hex) throw new Error(`chunk bytes do not match digest ${hex}`);
    if (this.#sizes.has(hex)) {
      this.#touch(hex);
      return;
    }
    const landing = this.#landing.get(hex);
    if (landing) return landing.stored; // being written already
    const stored = this.#store(hex, bytes).finally(() => this.#landing.delete(hex));
    this.#landing.set(hex, { bytes, stored });
    return stored;
  }

  async #store(hex: string, bytes: Uint8Array): Promise<void> {
    const temp = join(this.dir, `${TEMP_PREFIX}${hex.slice(0, 16)}-${process.pid}-${++tempCount}`);
    try {
      await writeFile(temp, bytes);
      await rename(temp, this.#path(hex));
    } catch (err) {
      await rm(temp, { force: true });
      throw err;
    }
    if (!this.#sizes.has(hex)) this.#add(hex, bytes.length);
    await this.#evict();
  }

  get stats(): ChunkCacheStats {
    return {
      entries: this.#sizes.size,
      bytes: this.#bytes,
      maxBytes: this.maxBytes,
      hits: this.#hits,
      misses: this.#misses,
      evictions: this.#evictions,
      corrupt: this.#corrupt,
    };
  }

  #path(hex: string): string {
    return join(this.dir, hex);
  }

  #add(hex: string, size: number): void {
    this.#sizes.set(hex, size);
    this.#bytes += size;
  }

  #remove(hex: string): void {
    const size = this.#sizes.get(hex);
    if (size === undefined) return;
    this.#sizes.delete(hex);
    this.#bytes -= size;
  }

  #touch(hex: string): void {
    const size = this.#sizes.get(hex);
    if (size === undefined) return;
    this.#sizes.delete(hex);
    this.#sizes.set(hex, size);
  }

  /** Least recently used first, skipping chunks being read: they go once their reads are done. */
  async #evict(): Promise<void> {
    if (this.#bytes <= this.maxBytes) return;
    const doomed: string[] = [];
    for (const hex of this.#sizes.keys()) {
      if (this.#bytes <= this.maxBytes) break;
      if (this.#reading.has(hex)) continue;
      this.#remove(hex);
      doomed.push(hex);
    }
    this.#evictions += doomed.length;
    for (const hex of doomed) await rm(this.#path(hex), { force: true });
  }
}
