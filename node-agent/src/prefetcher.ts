// Background prefetch (`--prefetch all|FILE`): fetches chunks the mount will probably be asked for
// before anyone reads them, without getting in the way of those who do. A batch starts only while
// no read waits on the proxy; few batches are in flight at once, each about one merged range
// request, and the connection pool has room beside them, so a read never queues behind prefetch
// work. An optional rate cap leaves the link to others.
import type { Bootstrap } from "../../src/format/decode.ts";
import { toHex } from "../../src/hash/hasher.ts";
import type { ChunkCache } from "./chunk-cache.ts";
import type { ChunkFetcher, WantedChunk } from "./chunk-fetcher.ts";

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

/**
 * Chunk-table indexes, most wanted first, and how long reads must have paused before a batch
 * starts: 0 for a list meant to run ahead of the reads, longer for fetching everything, which on
 * a fast link would otherwise take the agent's thread (hashing, writing the cache) from the reads.
 */
export interface PrefetchPhase {
  chunks: number[];
  quietMs: number;
}

// A proxy that fails this many batches in a row is down for now; reads will say so themselves.
const MAX_FAILED_BATCHES_IN_A_ROW = 3;

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
  #running: Promise<void> | undefined;

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
    for (const phase of this.#phases) {
      if (this.#stopped) break;
      this.#order = phase.chunks;
      this.#quietMs = phase.quietMs;
      this.#cursor = 0;
      await Promise.all(Array.from({ length: this.#concurrency }, () => this.#worker(began)));
    }
    this.stats.done = true;
  }

  /** Starts no more batches; resolves once those in flight have settled. */
  async stop(): Promise<void> {
    this.#stopped = true;
    for (const wake of this.#sleepers) wake();
    await this.#running;
  }

  async #worker(began: number): Promise<void> {
    while (!this.#stopped) {
      await this.#foreground.idle(this.#quietMs);
      if (this.#stopped) return;
      const batch = this.#nextBatch();
      if (batch.length === 0) return;
      const bytes = batch.reduce((sum, c) => sum + c.record.storedSize, 0);
      if (this.#rate) {
        // Reserved before the wait, so that concurrent workers share one budget.
        this.#reserved += bytes;
        await this.#sleepUntil(began + ((this.#reserved - bytes) / this.#rate) * 1000);
        if (this.#stopped) return;
        await this.#foreground.idle(this.#quietMs); // a read may have come in while this one waited
      }
      try {
        const fetched = await this.#fetcher.fetchChunks(batch);
        await Promise.all([...fetched].map(([hex, data]) => this.#cache.put(hex, data).catch(() => undefined)));
        this.stats.chunks += batch.length;
        this.stats.bytes += bytes;
        this.#failedInARow = 0;
      } catch (err) {
        this.stats.failed += batch.length;
        if (++this.#failedInARow >= MAX_FAILED_BATCHES_IN_A_ROW && !this.#stopped) {
          this.#stopped = true;
          this.#log(`prefetch stopped after ${MAX_FAILED_BATCHES_IN_A_ROW} failed requests in a row: ${(err as Error).message}`);
        }
      }
    }
  }

  /** The next chunks in order that are neither cached nor taken, up to one batch's bytes of one layer. */
  #nextBatch(): WantedChunk[] {
    const batch: WantedChunk[] = [];
    let bytes = 0;
    while (this.#cursor < this.#order.length) {
      const record = this.#bootstrap.chunk(this.#order[this.#cursor]!);
      const hex = toHex(record.digest);
      if (this.#taken.has(hex) || this.#cache.has(hex)) {
        this.#cursor++;
        continue;
      }
      if (batch.length > 0 && (record.blob !== batch[0]!.record.blob || bytes + record.storedSize > this.#batchBytes)) break;
      this.#taken.add(hex);
      this.#cursor++;
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
