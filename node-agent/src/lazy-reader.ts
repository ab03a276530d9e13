// The FileReader of a lazy mount: a file's bytes come from the node's chunk cache, and the chunks
// not there yet from the proxy, fetched together and cached on the way. A file read sequentially
// also gets its next chunks fetched in the background, so a streaming reader rarely waits.
import type { Bootstrap } from "../../src/format/decode.ts";
import type { ChunkCache } from "./chunk-cache.ts";
import type { ChunkFetcher, WantedChunk } from "./chunk-fetcher.ts";
import { copyPieces, type FilePieces, type FileReader } from "./file-reader.ts";
import { findLibrary, neededLibraries } from "./elf-libraries.ts";
import { elfDataSegments, elfHeaders, type ByteRange, type ElfHeaders } from "./elf-segments.ts";
import { allChunks } from "./prefetch-list.ts";
import { RecentChunks } from "./recent-chunks.ts";
import { SiblingPrefetch } from "./sibling-prefetch.ts";
import { toHex } from "../../src/hash/hasher.ts";
import { sleep } from "../../src/util/sleep.ts";
import { trace, tracing } from "./trace.ts";

/**
 * `--prefetch-nearby auto`, the default of `skiff mount` and the snapshotter: the best size on the
 * cold-start benchmark's slow link, used only while round trips cost this much (docs/benchmarks.md,
 * "A first node's cold start").
 */
export const AUTO_NEARBY = { bytes: 256 * 2 ** 10, minRoundTripMs: 10 };

/**
 * Program prefetch's bound per file, the default of `skiff mount` and the snapshotter: the largest
 * programs and libraries (tens of MiB of code) keep well under this outside their code.
 */
export const PROGRAM_PREFETCH_BYTES = 16 * 2 ** 20;

/** How many levels of libraries program prefetch follows: a program, the libraries it needs, theirs, and theirs. */
const MAX_LIBRARY_DEPTH = 3;

/**
 * The readers of one image's layers, lowest first, when each layer is mounted on its own (a kernel
 * overlayfs joins them): a program in one layer loads libraries from the others.
 */
export class LayerGroup {
  readonly #readers: LazyReader[] = [];
  readonly #onEmpty: () => void;

  /** `onEmpty`: called when the last reader leaves (its image is no longer mounted). */
  constructor(onEmpty: () => void = () => {}) {
    this.#onEmpty = onEmpty;
  }

  add(reader: LazyReader): void {
    if (!this.#readers.includes(reader)) this.#readers.push(reader);
  }

  delete(reader: LazyReader): void {
    const at = this.#readers.indexOf(reader);
    if (at < 0) return;
    this.#readers.splice(at, 1);
    if (this.#readers.length === 0) this.#onEmpty();
  }

  /** The readers other than `reader`, top layer first, as overlayfs looks names up. */
  others(reader: LazyReader): LazyReader[] {
    return this.#readers.filter((r) => r !== reader).reverse();
  }
}

export interface LazyReaderOptions {
  /** Chunks fetched ahead of a sequential reader; 0 turns readahead off. Default 4. */
  readaheadChunks?: number;
  /**
   * After a read misses, fetch up to this many stored bytes of the chunks that follow the missed
   * one in its layer's data blob, in the background (`--prefetch-nearby`); and once two small
   * files of one kind in one directory have missed, the others beside them (sibling-prefetch.ts).
   * Default 0: off.
   */
  nearbyBytes?: number;
  /**
   * Nearby fetches only while a round trip to the proxy (the fetcher's smoothed time to a
   * response) takes at least this long: on a fast link the bytes cost more than the round trips
   * they save. Default 0: whatever the link.
   */
  nearbyMinRoundTripMs?: number;
  /**
   * The readers of the image's other layers, when each layer is a mount of its own (the
   * snapshotter): a library program prefetch does not find in this layer is looked for there.
   */
  layers?: LayerGroup;
  /**
   * Program prefetch: when the first read of a file's start misses, its last chunk is fetched
   * behind it, and once the start is in, if it is an ELF file (a program or shared library), the
   * chunks of its segments that are not code, all in the background and up to this many bytes per
   * file: the dynamic loader touches them next, far from the header (elf-segments.ts). The
   * libraries it loads get the same, found in the image (elf-libraries.ts). Default 0: off.
   */
  programPrefetchBytes?: number;
  /** Told each chunk-table index a read needs, in the order reads need them (`--record`). */
  onChunkRead?: (chunkIndex: number) => void;
  /**
   * The verified chunks kept in memory; a process serving several mounts passes one to all of
   * them, so that the bound is per process, not per mount. Default: a RecentChunks of its own.
   */
  recent?: RecentChunks;
}

export interface LazyReaderStats {
  /** Chunks served from the cache. */
  cacheHits: number;
  /** Bytes returned by read(). */
  bytesRead: number;
}

// How many files' read positions are remembered for readahead; the map is cleared past this.
const MAX_TRACKED_FILES = 1024;
/**
 * Chunks a sequential reader's next reads need, read from the node's cache into memory ahead (of
 * those it has). Each costs a chunk file's lookup and read from disk, a few dependent disk reads
 * when the page cache is cold: eight at once keep the cache's read workers (verified-file-read.ts)
 * busy, and the mount's readahead asks for about four chunks ahead of the reader.
 */
export const DISK_READAHEAD_CHUNKS = 8;

export class LazyReader implements FileReader {
  readonly stats: LazyReaderStats = { cacheHits: 0, bytesRead: 0 };
  readonly #bootstrap: Bootstrap;
  readonly #cache: ChunkCache;
  readonly #fetcher: ChunkFetcher;
  readonly #readahead: number;
  /** Where the last read of each file ended. */
  readonly #lastEnd = new Map<number, number>();
  /** Readahead in progress, by file: at most one batch per file. */
  readonly #ahead = new Map<number, Promise<void>>();
  readonly #onChunkRead: ((chunkIndex: number) => void) | undefined;
  readonly #recent: RecentChunks;
  readonly #nearbyBytes: number;
  readonly #nearbyMinRoundTripMs: number;
  #storedOrder: { order: number[]; position: Int32Array } | undefined;
  readonly #siblings: SiblingPrefetch | undefined;
  /** While this says so, a learned list leads the mount's prefetch, and sibling prefetch waits. */
  #listLeads: () => boolean = () => false;
  readonly #programPrefetchBytes: number;
  readonly #layers: LayerGroup | undefined;
  /** Files whose start has been read. */
  readonly #looked = new Set<number>();
  /** Nearby and program prefetch work in progress. */
  readonly #nearby = new Set<Promise<void>>();
  /** Writes of fetched chunks to the cache (which answers with them meanwhile). */
  readonly #writes = new Set<Promise<void>>();
  /** Reads, and readaheads waiting on the proxy, in progress; and who waits for there to be none. */
  #busy = 0;
  #idleWaiters: (() => void)[] = [];
  /** When the last of them ended. */
  #quietSince = 0;
  /** Numbers the reads that wait for chunks in a trace (SKIFF_TRACE). */
  #traceWaits = 0;

  constructor(bootstrap: Bootstrap, cache: ChunkCache, fetcher: ChunkFetcher, options: LazyReaderOptions = {}) {
    this.#bootstrap = bootstrap;
    this.#cache = cache;
    this.#fetcher = fetcher;
    this.#readahead = Math.max(0, Math.floor(options.readaheadChunks ?? 4));
    this.#onChunkRead = options.onChunkRead;
    this.#nearbyBytes = Math.max(0, options.nearbyBytes ?? 0);
    this.#nearbyMinRoundTripMs = Math.max(0, options.nearbyMinRoundTripMs ?? 0);
    this.#programPrefetchBytes = Math.max(0, options.programPrefetchBytes ?? 0);
    this.#layers = options.layers;
    this.#recent = options.recent ?? new RecentChunks();
    this.#siblings =
      this.#nearbyBytes > 0
        ? new SiblingPrefetch(bootstrap, {
            has: (index) => this.#cache.has(toHex(bootstrap.chunk(index).digest)),
            fetch: (wanted) => {
              const run = this.#fetch(wanted).then(() => undefined, () => undefined);
              this.#inBackground(run);
              return run;
            },
            storedPosition: () => (this.#storedOrder ??= storedOrder(bootstrap)).position,
          })
        : undefined;
  }

  /**
   * Resolves once no read (or readahead) has been in progress for `quietMs`: background work goes
   * after. With 0, as soon as none is. Reads served from the cache count too: they need this thread.
   */
  async foregroundIdle(quietMs = 0): Promise<void> {
    for (;;) {
      if (this.#busy > 0) await new Promise<void>((resolve) => this.#idleWaiters.push(resolve));
      const left = this.#quietSince + quietMs - Date.now();
      if (left <= 0) return;
      await sleep(left);
    }
  }

  /**
   * A learned list now leads this mount's prefetch: while it matches the reads it holds what they
   * need, and guessing at a directory's other files would only add bytes. So sibling prefetch waits
   * while `offTrack` says the reads match the list, and resumes once they stop matching it.
   */
  followLearnedList(offTrack: () => boolean): void {
    this.#listLeads = () => !offTrack();
  }

  /** Whether a read (or readahead) is in progress. */
  get busy(): boolean {
    return this.#busy > 0;
  }

  /** The bytes in a buffer of their own (readPieces hands out views that are only lent). */
  async read(inode: number, offset: number, length: number): Promise<Uint8Array> {
    const { pieces, release } = await this.readPieces(inode, offset, length);
    const out = new Uint8Array(pieces.reduce((n, piece) => n + piece.byteLength, 0));
    copyPieces(pieces, out);
    release();
    return out;
  }

  async readPieces(inode: number, offset: number, length: number): Promise<FilePieces> {
    this.#busy++;
    try {
      return await this.#read(inode, offset, length);
    } finally {
      this.#done();
    }
  }

  async #read(inode: number, offset: number, length: number): Promise<FilePieces> {
    const ino = this.#bootstrap.inode(inode);
    if (ino.type !== "file") throw new Error(`inode ${inode} is not a regular file`);
    if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || length < 0) {
      throw new RangeError(`bad read of inode ${inode}: offset ${offset}, length ${length}`);
    }
    const end = Math.min(ino.size, offset + length);
    if (end <= offset) return { pieces: [], release: () => {} };

    const shift = this.#bootstrap.chunkShift;
    const first = Math.floor(offset / 2 ** shift);
    const last = Math.floor((end - 1) / 2 ** shift);
    const indexes = this.#bootstrap.chunkIndexes(inode);
    if (this.#onChunkRead) for (let k = first; k <= last; k++) this.#onChunkRead(indexes[k]!);
    // The first read of a program or library: its header is in chunk 0 (elf-segments.ts).
    const firstLook = first === 0 && this.#programPrefetchBytes > 0 && indexes.length > 1 && this.#firstLook(inode);
    const chunks = await this.#load(indexes.slice(first, last + 1), inode, () => {
      this.#fetchNearby(indexes[last]!);
      if (this.#siblings && this.#nearbyPays()) this.#siblings.missed(inode, !this.#listLeads());
      if (firstLook) this.#fetchTail(indexes);
    });
    const release = () => chunks.forEach((chunk) => this.#recent.release(chunk));

    // Views of the chunks, not copies: chunks are never written to once verified. The kernel's
    // readahead windows do not keep to chunk boundaries, so a sequential reader's 1 MiB reads
    // mostly span two chunks; joining them cost a 1 MiB buffer per read, and the garbage
    // collections that external memory brings on.
    let pieces: Uint8Array[];
    try {
      pieces = piecesOf(chunks, first, shift, offset, end, inode);
    } catch (err) {
      release();
      throw err;
    }
    this.stats.bytesRead += end - offset;
    if (firstLook) this.#prefetchProgram(inode, chunks[0]!, 0);
    this.#maybeReadAhead(inode, offset, end, last, indexes);
    return { pieces, release };
  }

  /** Resolves when no readahead, nearby fetch or cache write is running (for tests and clean shutdown). */
  async idle(): Promise<void> {
    for (let i = 0; i < 100 && this.#ahead.size + this.#nearby.size + this.#writes.size > 0; i++) {
      await Promise.allSettled([...this.#ahead.values(), ...this.#nearby, ...this.#writes]);
    }
  }

  /**
   * The bytes of the given chunk-table entries, in order: cached ones from the cache, the rest
   * fetched in one go; `onMiss` right after that request is sent, for background fetches to follow it.
   * Each is held for the caller (RecentChunks.release gives it back); none when this fails.
   */
  async #load(chunkIndexes: number[], inode: number, onMiss: () => void, background = false): Promise<Uint8Array[]> {
    const records = chunkIndexes.map((i) => this.#bootstrap.chunk(i));
    const hexes = records.map((r) => toHex(r.digest));
    const out = await Promise.all(hexes.map((hex) => this.#recent.get(hex, () => this.#cache.get(hex))));
    const missing: WantedChunk[] = [];
    for (let i = 0; i < records.length; i++) {
      if (out[i]) this.stats.cacheHits += background ? 0 : 1;
      else missing.push({ record: records[i]!, layerDigest: this.#bootstrap.blob(records[i]!.blob).layerDigest });
    }
    if (missing.length === 0) return out as Uint8Array[];
    const wait = tracing && !background ? ++this.#traceWaits : 0;
    if (wait) trace("read-wait", { wait, inode, chunks: missing.map((w) => toHex(w.record.digest).slice(0, 16)) });
    // The read's own request goes first: on a slow link the nearby one's bytes queue behind it.
    const fetching = this.#fetch(missing);
    onMiss();
    let fetched: Map<string, Uint8Array>;
    try {
      fetched = await fetching;
    } catch (err) {
      for (const bytes of out) if (bytes) this.#recent.release(bytes);
      throw err;
    }
    if (wait) trace("read-wait-end", { wait });
    // Fetched bytes are never in the slab: they need no holding.
    return hexes.map((hex, i) => {
      const bytes = out[i] ?? fetched.get(hex);
      if (!bytes) throw new Error(`inode ${inode}: chunk ${hex} was not fetched`);
      return bytes;
    });
  }

  /**
   * Fetches chunks, counted as waiting until they are verified. Each is written to the cache behind
   * the read (a write per chunk costs the read a few ms each) as it arrives; until it is on disk the
   * cache answers with it from memory.
   */
  async #fetch(wanted: WantedChunk[]): Promise<Map<string, Uint8Array>> {
    this.#busy++;
    try {
      return await this.#fetcher.fetchChunks(wanted, (hex, bytes) => {
        this.#recent.put(hex, bytes);
        this.#storeBehind(hex, bytes);
      });
    } finally {
      this.#done();
    }
  }

  /**
   * The chunks stored right after a missed one in its layer's data blob, fetched in the background:
   * they belong to the files next to it in the layer (the rest of a package), which a program that
   * opened one is likely to open next, and each read that finds them cached saves a round trip.
   */
  #fetchNearby(chunkIndex: number): void {
    if (!this.#nearbyPays()) return;
    this.#storedOrder ??= storedOrder(this.#bootstrap);
    const { order, position } = this.#storedOrder;
    const blob = this.#bootstrap.chunk(chunkIndex).blob;
    const wanted: WantedChunk[] = [];
    let bytes = 0;
    for (let p = position[chunkIndex]! + 1; p < order.length; p++) {
      const record = this.#bootstrap.chunk(order[p]!);
      if (record.blob !== blob || this.#cache.has(toHex(record.digest))) break;
      bytes += record.storedSize;
      if (bytes > this.#nearbyBytes) break;
      wanted.push({ record, layerDigest: this.#bootstrap.blob(blob).layerDigest });
    }
    this.#fetchInBackground(wanted);
  }

  /** Whether this is the first read of the file's start (remembered for up to MAX_TRACKED_FILES files). */
  #firstLook(inode: number): boolean {
    if (this.#looked.has(inode)) return false;
    if (this.#looked.size >= MAX_TRACKED_FILES) this.#looked.clear();
    this.#looked.add(inode);
    return true;
  }

  /**
   * A file's last chunk, fetched behind its first when the first misses. A program or library keeps
   * its writable data at its end, and the loader touches it right after the header; this saves that
   * round trip before the header is even in (elsewhere it costs at most one chunk per file).
   */
  #fetchTail(indexes: number[]): void {
    const record = this.#bootstrap.chunk(indexes[indexes.length - 1]!);
    if (this.#cache.has(toHex(record.digest))) return;
    this.#fetchInBackground([{ record, layerDigest: this.#bootstrap.blob(record.blob).layerDigest }]);
  }

  /**
   * A program's or library's first look, its header in hand: the segments the loader touches next,
   * and the libraries it loads (each with a first look of its own), fetched in the background.
   * `head` is only read before this returns: the read that lent it may give it back then.
   */
  #prefetchProgram(inode: number, head: Uint8Array, depth: number): void {
    const size = this.#bootstrap.inode(inode).size;
    const indexes = this.#bootstrap.chunkIndexes(inode);
    this.#fetchElfSegments(head, size, indexes);
    const h = depth < MAX_LIBRARY_DEPTH ? elfHeaders(head) : null;
    if (h) this.#inBackground(this.#fetchLibraries(inode, h, size, indexes, depth));
  }

  /** The libraries an ELF object loads, found in this image as the loader would find them: each one's header, tail and segments, and its own libraries. */
  async #fetchLibraries(inode: number, h: ElfHeaders, size: number, indexes: number[], depth: number): Promise<void> {
    const libraries = await neededLibraries(h, size, (range) => this.#backgroundRange(inode, indexes, range));
    if (!libraries) return;
    for (const name of [...(libraries.interp ? [libraries.interp] : []), ...libraries.needed]) {
      for (const reader of [this, ...(this.#layers?.others(this) ?? [])]) {
        if (reader.prefetchLibrary(name, libraries.runPath, h.machine, depth + 1)) break;
      }
    }
  }

  /**
   * Program prefetch of a library another object loads, when this reader's tree has it: its first
   * look (header, tail, segments, its own libraries) in the background. False when it is not here.
   */
  prefetchLibrary(name: string, runPath: string[], machine: number, depth: number): boolean {
    if (this.#programPrefetchBytes <= 0) return false;
    const inode = findLibrary(this.#bootstrap, name, runPath, machine);
    if (inode === null) return false;
    const indexes = this.#bootstrap.chunkIndexes(inode);
    if (indexes.length === 0 || !this.#firstLook(inode)) return true;
    if (indexes.length > 1) this.#fetchTail(indexes);
    this.#inBackground(
      this.#load(indexes.slice(0, 1), inode, () => {}, true).then(([head]) => {
        try {
          this.#prefetchProgram(inode, head!, depth);
        } finally {
          this.#recent.release(head!);
        }
      }),
    );
    return true;
  }

  /** A copy of a file's bytes in `range`, from the cache or fetched (not a read: no read waits for it). */
  async #backgroundRange(inode: number, indexes: number[], { start, end }: ByteRange): Promise<Uint8Array> {
    const shift = this.#bootstrap.chunkShift;
    const first = Math.floor(start / 2 ** shift);
    const chunks = await this.#load(indexes.slice(first, Math.floor((end - 1) / 2 ** shift) + 1), inode, () => {}, true);
    try {
      const out = new Uint8Array(end - start);
      copyPieces(piecesOf(chunks, first, shift, start, end, inode), out);
      return out;
    } finally {
      for (const data of chunks) this.#recent.release(data);
    }
  }

  /** An ELF file's segments that are not code, fetched once its header is in. */
  #fetchElfSegments(head: Uint8Array, size: number, indexes: number[]): void {
    const shift = this.#bootstrap.chunkShift;
    const wanted: WantedChunk[] = [];
    const taken = new Set<number>([0]);
    let bytes = 0;
    for (const { start, end } of elfDataSegments(head, size)) {
      for (let k = Math.floor(start / 2 ** shift); k <= Math.floor((end - 1) / 2 ** shift) && k < indexes.length; k++) {
        if (taken.has(k)) continue;
        taken.add(k);
        const record = this.#bootstrap.chunk(indexes[k]!);
        if (this.#cache.has(toHex(record.digest))) continue;
        bytes += record.size;
        if (bytes > this.#programPrefetchBytes) return this.#fetchInBackground(wanted);
        wanted.push({ record, layerDigest: this.#bootstrap.blob(record.blob).layerDigest });
      }
    }
    this.#fetchInBackground(wanted);
  }

  /** Nearby fetches are on, and round trips cost enough for them (nearbyMinRoundTripMs). */
  #nearbyPays(): boolean {
    if (this.#nearbyBytes <= 0) return false;
    return this.#nearbyMinRoundTripMs <= 0 || this.#fetcher.stats.roundTripMs >= this.#nearbyMinRoundTripMs;
  }

  /** Fetches chunks no read waits for yet; a read that needs one before they arrive fetches it itself. */
  #fetchInBackground(wanted: WantedChunk[]): void {
    if (wanted.length > 0) this.#inBackground(this.#fetch(wanted));
  }

  /** Background work: its failure only costs a later read a fetch of its own; idle() waits for it. */
  #inBackground(work: Promise<unknown>): void {
    const run: Promise<void> = work
      .then(() => undefined, () => undefined)
      .finally(() => this.#nearby.delete(run));
    this.#nearby.add(run);
  }

  #done(): void {
    if (--this.#busy > 0) return;
    this.#quietSince = Date.now();
    for (const resolve of this.#idleWaiters.splice(0)) resolve();
  }

  /** Caches a fetched chunk in the background; a full or failing disk costs a refetch later, never a read. */
  #storeBehind(hex: string, bytes: Uint8Array): void {
    const started = tracing ? performance.now() : 0;
    const write: Promise<void> = this.#cache
      .put(hex, bytes, { verified: true }) // as the fetcher checked them
      .catch(() => undefined)
      .then(() => {
        if (tracing) trace("cache-write", { chunks: 1, ms: performance.now() - started });
      })
      .finally(() => this.#writes.delete(write));
    this.#writes.add(write);
  }

  #maybeReadAhead(inode: number, offset: number, end: number, lastChunk: number, indexes: number[]): void {
    const sequential = offset > 0 && this.#lastEnd.get(inode) === offset;
    if (this.#lastEnd.size >= MAX_TRACKED_FILES && !this.#lastEnd.has(inode)) this.#lastEnd.clear();
    this.#lastEnd.set(inode, end);
    if (!sequential || this.#readahead === 0) return;
    const wanted: WantedChunk[] = [];
    const reach = Math.max(this.#readahead, DISK_READAHEAD_CHUNKS);
    for (let k = lastChunk + 1; k < indexes.length && k <= lastChunk + reach; k++) {
      const record = this.#bootstrap.chunk(indexes[k]!);
      const hex = toHex(record.digest);
      if (!this.#cache.has(hex)) {
        if (k <= lastChunk + this.#readahead) wanted.push({ record, layerDigest: this.#bootstrap.blob(record.blob).layerDigest });
      }
      // Cached ones are read from disk ahead too: a cold chunk file costs a few ms the reader would wait.
      else if (k <= lastChunk + DISK_READAHEAD_CHUNKS) {
        void this.#recent.get(hex, () => this.#cache.get(hex).catch(() => null)).then((bytes) => bytes && this.#recent.release(bytes));
      }
    }
    if (wanted.length === 0 || this.#ahead.has(inode)) return;
    const run = this.#fetch(wanted)
      .then(() => undefined)
      .catch(() => undefined) // counted by the fetcher; the read that needs the chunk will retry
      .finally(() => this.#ahead.delete(inode));
    this.#ahead.set(inode, run);
  }
}

/** Chunk-table indexes in data-blob order, and each index's place in that order. */
function storedOrder(bootstrap: Bootstrap): { order: number[]; position: Int32Array } {
  const order = allChunks(bootstrap);
  const position = new Int32Array(bootstrap.chunkCount);
  order.forEach((index, p) => (position[index] = p));
  return { order, position };
}

/**
 * Views of a file's bytes [start, end) in its chunks `first`, `first` + 1, … (`chunks`), of 2^shift
 * bytes each. Throws when a chunk does not cover its part of the file: every chunk but a file's
 * last is exactly one chunk size, and the last must reach the end of the range.
 */
function piecesOf(chunks: readonly Uint8Array[], first: number, shift: number, start: number, end: number, inode: number): Uint8Array[] {
  const last = first + chunks.length - 1;
  return chunks.map((data, i) => {
    const k = first + i;
    const chunkStart = k * 2 ** shift;
    const from = Math.max(start, chunkStart);
    const to = Math.min(end, chunkStart + data.length);
    if (data.length > 2 ** shift || (k < last && data.length !== 2 ** shift) || (to < end && k === last)) {
      throw new Error(`inode ${inode}: chunk ${k} is ${data.length} bytes, which does not cover the file`);
    }
    return data.subarray(from - chunkStart, to - chunkStart);
  });
}
