// Background prefetch (`--prefetch all|FILE`): fetches chunks the mount will probably be asked for
// before anyone reads them, without getting in the way of those who do. A batch starts only while
// no read waits on the proxy; few batches are in flight at once, each about one merged range
// request, and the connection pool has room beside them, so a read never queues behind prefetch
// work. An optional rate cap leaves the link to others.
import type { Bootstrap } from "../../src/format/decode.ts";
import { toHex } from "../../src/hash/hasher.ts";
import type { ChunkCache } from "./chunk-cache.ts";
import type { ChunkFetcher, WantedChunk } from "./chunk-fetcher.ts";
import { ListPace } from "./list-pace.ts";

export interface PrefetcherOptions {
  /** Batches in flight at once (default 2; the fetcher's pool has 8 connections). */
  concurrency?: number;
  /** Stored bytes per batch, about one merged range request (default 1 MiB). */
  batchBytes?: number;
  /** Limit on prefetched bytes per second (default none). */
  bytesPerSecond?: number;
  log?: (message: string) => void;
}

export interface PrefetchStats {
  /** Chunks fetched and cached by prefetch. */
  chunks: number;
  /** Stored bytes of those chunks. */
  bytes: number;
  /** Chunks in batches that failed (the reads that need them fetch them again). */
  failed: number;
  /** Whether prefetch has gone through its whole list (or given up). */
  done: boolean;
}

/** What the prefetcher must let go first: resolves when no read has waited on the proxy for `quietMs`. */
export interface Foreground {
  idle(quietMs: number): Promise<void>;
}

/** A reader as a foreground: its reads in progress, and when there are none. */
export interface ReaderForeground {
  readonly busy: boolean;
  foregroundIdle(quietMs: number): Promise<void>;
}

// A pass that finds a reader busy again starts over; past this many, a batch goes anyway.
const MAX_IDLE_PASSES = 10;

/**
 * The reads of every layer of one image as one foreground: containerd mounts an image layer by
 * layer, each with its own reader and its share of the learned list, and a layer's prefetch must
 * let the reads of the others go first too, or it holds the link ahead of them.
 */
export class LayersForeground implements Foreground {
  readonly #readers = new Set<ReaderForeground>();

  add(reader: ReaderForeground): void {
    this.#readers.add(reader);
  }

  delete(reader: ReaderForeground): void {
    this.#readers.delete(reader);
  }

  async idle(quietMs: number): Promise<void> {
    for (let pass = 0; pass < MAX_IDLE_PASSES; pass++) {
      for (const reader of [...this.#readers]) await reader.foregroundIdle(quietMs);
      if (![...this.#readers].some((r) => r.busy)) return;
    }
  }
}

/**
 * Chunk-table indexes, most wanted first, and how long reads must have paused before a batch
 * starts: 0 for a list meant to run ahead of the reads, longer for fetching everything, which on
 * a fast link would otherwise take the agent's thread (hashing, writing the cache) from the reads.
 */
export interface PrefetchPhase {
  chunks: number[];
  quietMs: number;
  /** A guess at what the reads will need (a learned or recorded list), paced by them (list-pace.ts). */
  followsReads?: boolean;
  /**
   * Stops before the cache would hold more than CACHE_FILL_SHARE of its size: a layer filled in
   * the background must not evict what containers have read for what they might.
   */
  withinCacheRoom?: boolean;
}

/** How full a phase `withinCacheRoom` may leave the cache. */
export const CACHE_FILL_SHARE = 0.9;

// A proxy that fails this many batches in a row is down for now; reads will say so themselves.
const MAX_FAILED_BATCHES_IN_A_ROW = 3;
// A list held back by the reads' pace gives way to the next phase once they have not moved it for this long.
const HELD_LIMIT_MS = 1_000;
// Off track (list-pace.ts), a list still fills pauses in the reads: one small batch at a time, after this much quiet.
const OFF_TRACK_QUIET_MS = 100;
const OFF_TRACK_BATCH_SHARE = 4;

export class Prefetcher {
  readonly stats: PrefetchStats = { chunks: 0, bytes: 0, failed: 0, done: false };
  readonly #bootstrap: Bootstrap;
  readonly #cache: ChunkCache;
  readonly #fetcher: ChunkFetcher;
  readonly #foreground: Foreground;
  readonly #phases: PrefetchPhase[];
  #order: number[] = [];
  #quietMs = 0;
  readonly #concurrency: number;
  readonly #batchBytes: number;
  readonly #rate: number | undefined;
  readonly #log: (message: string) => void;
  /** Chunk digests already taken into a batch. */
  readonly #taken = new Set<string>();
  #cursor = 0;
  #reserved = 0;
  #failedInARow = 0;
  #stopped = false;
  /** Wakes each worker sleeping out the rate cap (on stop). */
  readonly #sleepers = new Set<() => void>();
  /** Workers held back by the pace of the reads, until a batch settles or a read moves on. */
  #held: (() => void)[] = [];
  #running: Promise<void> | undefined;
  /** The running phase's pace, when it follows the reads. */
  #pace: ListPace | undefined;
  /** Whether another phase follows the running one. */
  #phaseAfter = false;
  /** Whether the running phase stops short of filling the cache. */
  #withinCacheRoom = false;
  /** Stored bytes of the batches in flight, not in the cache yet. */
  #fetchingBytes = 0;
  #inFlight = 0;

  /** A phase's chunks are all fetched before the next phase starts (a replayed list before `all`); repeats are fetched once. */
  constructor(bootstrap: Bootstrap, cache: ChunkCache, fetcher: ChunkFetcher, foreground: Foreground, phases: PrefetchPhase[], options: PrefetcherOptions = {}) {
    this.#bootstrap = bootstrap;
    this.#cache = cache;
    this.#fetcher = fetcher;
    this.#foreground = foreground;
    this.#phases = phases;
    this.#concurrency = Math.max(1, Math.floor(options.concurrency ?? 2));
    this.#batchBytes = Math.max(1, options.batchBytes ?? 2 ** 20);
    this.#rate = options.bytesPerSecond;
    this.#log = options.log ?? (() => {});
  }

  start(): void {
    this.#running ??= this.#run();
  }

  async #run(): Promise<void> {
    const began = Date.now();
    for (const [i, phase] of this.#phases.entries()) {
      if (this.#stopped) break;
      this.#phaseAfter = i < this.#phases.length - 1;
      this.#order = phase.chunks;
      this.#quietMs = phase.quietMs;
      this.#withinCacheRoom = phase.withinCacheRoom ?? false;
      this.#cursor = 0;
      this.#pace = phase.followsReads ? new ListPace(phase.chunks) : undefined;
      await Promise.all(Array.from({ length: this.#concurrency }, () => this.#worker(began)));
    }
    this.stats.done = true;
  }

  /** Starts no more batches; resolves once those in flight have settled. */
  async stop(): Promise<void> {
    this.#stopped = true;
    for (const wake of [...this.#sleepers, ...this.#held.splice(0)]) wake();
    await this.#running;
  }

  /** A read needed this chunk: a list that follows the reads may run further, or give way. */
  sawRead(chunkIndex: number): void {
    const pace = this.#pace;
    const wasOffTrack = pace?.offTrack;
    if (!pace?.saw(chunkIndex)) return;
    if (pace.offTrack !== wasOffTrack) this.#log(`prefetch list ${pace.offTrack ? "gives way: reads stopped matching it" : "runs ahead again: reads match it"}`);
    for (const wake of this.#held.splice(0)) wake();
  }

  /** Whether the running (or last) list gives way to reads that do not match it: sibling prefetch waits until it does. */
  get offTrack(): boolean {
    return this.#pace?.offTrack ?? false;
  }

  /** Whether the pace of the reads holds the next batch back: the list is far enough ahead, or off track with a batch in flight. */
  #heldBack(): boolean {
    return !!this.#pace && (this.#pace.full || (this.#pace.offTrack && this.#inFlight > 0));
  }

  /**
   * Waits until a batch may start: reads have paused long enough and their pace allows it. Then
   * counts the caller in flight (checked and counted in one step, so that two workers woken
   * together do not both start) and resolves true; the caller takes it out when its batch has
   * settled. False when prefetch stopped, or when the reads have stopped taking the list while a
   * phase comes after it (`all`, say): it is as far ahead as it may be, nothing is in flight, and
   * no read moved it for HELD_LIMIT_MS; that next phase starts then. A last list waits on: a
   * program that pauses while it starts goes on reading it later.
   */
  async #mayStart(): Promise<boolean> {
    for (;;) {
      const offTrack = this.offTrack;
      if (this.#heldBack()) {
        const moved = await this.#change(HELD_LIMIT_MS);
        if (!moved && this.#pace?.full && this.#inFlight === 0 && this.#phaseAfter) return false;
      } else await this.#foreground.idle(offTrack ? OFF_TRACK_QUIET_MS : this.#quietMs);
      if (this.#stopped) return false;
      if (offTrack === this.offTrack && !this.#heldBack()) break;
    }
    this.#inFlight++;
    return true;
  }

  /** Resolves true when a read moves the list or a batch settles, false after `ms`. */
  #change(ms: number): Promise<boolean> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), ms);
      this.#held.push(() => {
        clearTimeout(timer);
        resolve(true);
      });
    });
  }

  async #worker(began: number): Promise<void> {
    while (!this.#stopped && (await this.#mayStart())) {
      try {
        if (!(await this.#fetchBatch(began))) return;
      } finally {
        this.#inFlight--;
        for (const wake of this.#held.splice(0)) wake();
      }
    }
  }

  /** Fetches and caches the next batch; false when there is none (or prefetch stopped). */
  async #fetchBatch(began: number): Promise<boolean> {
    if (this.#stopped) return false;
    const pace = this.#pace;
    const indexes: number[] = [];
    const batch = this.#nextBatch(this.offTrack ? this.#batchBytes / OFF_TRACK_BATCH_SHARE : this.#batchBytes, indexes);
    if (batch.length === 0) return false;
    batch.forEach((c, i) => pace?.took(indexes[i]!, c.record.storedSize));
    const bytes = batch.reduce((sum, c) => sum + c.record.storedSize, 0);
    if (this.#withinCacheRoom && this.#cache.stats.bytes + this.#fetchingBytes + bytes > this.#cache.maxBytes * CACHE_FILL_SHARE) {
      this.#log(`prefetch stops: the chunk cache would be more than ${Math.round(CACHE_FILL_SHARE * 100)} % full`);
      this.#cursor = this.#order.length; // the phase ends: no worker takes another batch from it
      return false;
    }
    // Counted at once, as the rate's reservation below: the other worker checks the room meanwhile.
    this.#fetchingBytes += bytes;
    try {
      if (this.#rate) {
        // Reserved before the wait, so that concurrent workers share one budget.
        this.#reserved += bytes;
        await this.#sleepUntil(began + ((this.#reserved - bytes) / this.#rate) * 1000);
        if (this.#stopped) return false;
        await this.#foreground.idle(this.#quietMs); // a read may have come in while this one waited
      }
      // Each chunk to the cache as it arrives: from then on the cache answers reads with it.
      const writes: Promise<void>[] = [];
      await this.#fetcher.fetchChunks(batch, (hex, data) => writes.push(this.#cache.put(hex, data, { verified: true }).catch(() => undefined)));
      await Promise.all(writes);
      this.stats.chunks += batch.length;
      this.stats.bytes += bytes;
      this.#failedInARow = 0;
    } catch (err) {
      this.stats.failed += batch.length;
      for (const index of indexes) pace?.dropped(index);
      if (++this.#failedInARow >= MAX_FAILED_BATCHES_IN_A_ROW && !this.#stopped) {
        this.#stopped = true;
        this.#log(`prefetch stopped after ${MAX_FAILED_BATCHES_IN_A_ROW} failed requests in a row: ${(err as Error).message}`);
      }
    } finally {
      this.#fetchingBytes -= bytes;
    }
    return true;
  }

  /** The next chunks in order that are neither cached nor taken, up to `maxBytes` of one layer; their chunk-table indexes go to `indexes`. */
  #nextBatch(maxBytes: number, indexes: number[]): WantedChunk[] {
    const batch: WantedChunk[] = [];
    let bytes = 0;
    while (this.#cursor < this.#order.length) {
      const record = this.#bootstrap.chunk(this.#order[this.#cursor]!);
      const hex = toHex(record.digest);
      if (this.#taken.has(hex) || this.#cache.has(hex)) {
        this.#cursor++;
        continue;
      }
      if (batch.length > 0 && (record.blob !== batch[0]!.record.blob || bytes + record.storedSize > maxBytes)) break;
      this.#taken.add(hex);
      indexes.push(this.#order[this.#cursor++]!);
      batch.push({ record, layerDigest: this.#bootstrap.blob(record.blob).layerDigest });
      bytes += record.storedSize;
    }
    return batch;
  }

  #sleepUntil(when: number): Promise<void> {
    const ms = when - Date.now();
    if (ms <= 0 || this.#stopped) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.#sleepers.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.#sleepers.add(done);
    });
  }
}
