// Fetches chunks from the proxy's lazy API: missing chunks are grouped into merged Range requests
// on each layer's data blob, every chunk is decoded and checked against its sha256 before anyone
// sees it, concurrent requests for one chunk share one fetch, and nothing outlives the timeout.
import { layerDataUrl } from "../../src/client/lazy-api.ts";
import { decodeChunkWith } from "../../src/format/chunk-codec.ts";
import { parseParamsId } from "../../src/format/params.ts";
import type { ChunkRecord } from "../../src/format/model.ts";
import { mergeGap, planRanges, type PlannedRange } from "./chunk-ranges.ts";
import { fetchRange, TransientError, type FetchLike } from "./range-request.ts";
import { toHex } from "../../src/hash/hasher.ts";
import { errorMessage } from "../../src/util/error-message.ts";
import { sleep } from "../../src/util/sleep.ts";
import { sha256Hex } from "./sha256-hex.ts";
import { zlibInflateRaw } from "./zlib-inflate.ts";
import { trace, tracing } from "./trace.ts";

export interface ChunkFetcherOptions {
  /** Base URL of the skiff proxy, e.g. `http://127.0.0.1:8080`. */
  proxy: string;
  /** Repository name, e.g. `library/alpine`. */
  name: string;
  /** The registry of the repository, for a proxy that mirrors several (`?ns=`). */
  ns?: string;
  /** Conversion parameters (`Skiff-Params`), e.g. `v1-c20-none`. */
  params: string;
  /** A fetch, retries included, rejects once this much time has passed. */
  timeoutMs: number;
  /** How requests are sent (the mount's one client, see proxy-http.ts); default: the global fetch. */
  fetchImpl?: FetchLike;
  /** Largest merged request; default 16 chunks. */
  maxRangeBytes?: number;
}

export interface WantedChunk {
  record: ChunkRecord;
  layerDigest: string;
}

export interface ChunkFetcherStats {
  /** Body bytes of accepted range responses. */
  bytesFetched: number;
  chunksFetched: number;
  /** HTTP requests sent, retries included. */
  requests: number;
  /** Failed attempts: network errors, bad responses, chunks that did not verify. */
  errors: number;
  /** Successful requests and the milliseconds they took, from sending to verified chunks. */
  fetches: number;
  fetchMs: number;
  /**
   * Time from sending a request to its response's headers, smoothed over the last few requests
   * (ms; 0 before the first): what one more round trip to the proxy costs a read.
   */
  roundTripMs: number;
}

const BACKOFF_FIRST_MS = 100;
const BACKOFF_MAX_MS = 2_000;
const RETRY_MS = 1_000;
const RETRY_QUIET_MS = 250;

export class ChunkFetcher {
  readonly stats: ChunkFetcherStats = { bytesFetched: 0, chunksFetched: 0, requests: 0, errors: 0, fetches: 0, fetchMs: 0, roundTripMs: 0 };
  readonly #proxy: string;
  readonly #name: string;
  readonly #ns: string | undefined;
  readonly #params: string;
  readonly #timeoutMs: number;
  readonly #codec: "none" | "deflate-raw";
  readonly #maxGap: number;
  readonly #maxRangeBytes: number;
  readonly #fetch: FetchLike;
  readonly #inflight = new Map<string, Promise<Uint8Array>>();
  /** When the current run of failed requests began; null while the proxy answers. */
  #failingSince: number | null = null;
  /** When a read's short try after the timeout last failed. */
  #lastRetryFailed = 0;
  /** Numbers the requests in a trace (SKIFF_TRACE). */
  #traceId = 0;

  constructor(o: ChunkFetcherOptions) {
    const params = parseParamsId(o.params);
    if (!params) throw new Error(`unknown conversion parameters ${JSON.stringify(o.params)}`);
    if (!(o.timeoutMs > 0)) throw new RangeError(`timeout must be positive, got ${o.timeoutMs}`);
    this.#codec = params.codec;
    this.#maxGap = mergeGap(params.chunkShift);
    this.#maxRangeBytes = o.maxRangeBytes ?? 16 * 2 ** params.chunkShift;
    this.#timeoutMs = o.timeoutMs;
    this.#proxy = o.proxy;
    this.#name = o.name;
    this.#ns = o.ns;
    this.#params = o.params;
    this.#fetch = o.fetchImpl ?? ((url, init) => fetch(url, init));
  }

  /**
   * Verified, uncompressed bytes of each wanted chunk, by digest hex. Rejects if any one can't be
   * had. `onChunk` gets each one as it arrives, before the rest: a chunk is no longer in flight
   * from then on, so a caller that keeps it (the cache) must take it there for no read to miss it.
   */
  async fetchChunks(wanted: WantedChunk[], onChunk?: (hex: string, bytes: Uint8Array) => void): Promise<Map<string, Uint8Array>> {
    const pending = new Map<string, Promise<Uint8Array>>();
    const toFetch: { hex: string; record: ChunkRecord; layerDigest: string }[] = [];
    for (const w of wanted) {
      const hex = toHex(w.record.digest);
      if (pending.has(hex)) continue;
      const shared = this.#inflight.get(hex);
      if (shared) {
        pending.set(hex, shared);
      } else {
        toFetch.push({ hex, record: w.record, layerDigest: w.layerDigest });
      }
    }
    if (toFetch.length > 0) {
      for (const [hex, p] of this.#start(toFetch)) pending.set(hex, p);
    }
    const out = new Map<string, Uint8Array>();
    const arrived = async (hex: string, p: Promise<Uint8Array>) => {
      const bytes = await p;
      onChunk?.(hex, bytes);
      out.set(hex, bytes);
    };
    const results = await Promise.allSettled([...pending].map(([hex, p]) => arrived(hex, p)));
    const failed = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
    if (failed) throw failed.reason;
    return out;
  }

  /** Registers one promise per chunk in the single-flight map, then runs the merged requests. */
  #start(toFetch: { hex: string; record: ChunkRecord; layerDigest: string }[]): Map<string, Promise<Uint8Array>> {
    const settle = new Map<string, { resolve: (b: Uint8Array) => void; reject: (e: unknown) => void }>();
    const promises = new Map<string, Promise<Uint8Array>>();
    for (const c of toFetch) {
      const p = new Promise<Uint8Array>((resolve, reject) => settle.set(c.hex, { resolve, reject }));
      p.catch(() => undefined); // a joiner may never await it; the error reaches callers through fetchChunks
      const done = () => this.#inflight.delete(c.hex);
      p.then(done, done);
      this.#inflight.set(c.hex, p);
      promises.set(c.hex, p);
    }
    const ranges = planRanges(toFetch, this.#maxGap, this.#maxRangeBytes);
    // The timeout bounds the fault, not each request: the kernel splits one read(2) into many
    // requests and retries failed ones. Once the proxy has failed for that long, a read gets one
    // short try (it may be back), and none right after such a try failed: those fail at once.
    const now = Date.now();
    const left = this.#failingSince === null ? this.#timeoutMs : this.#failingSince + this.#timeoutMs - now;
    const retrying = left <= 0;
    if (retrying && now - this.#lastRetryFailed < RETRY_QUIET_MS) {
      const error = new Error(`the proxy ${this.#proxy} has failed for ${now - this.#failingSince!} ms`);
      for (const c of toFetch) settle.get(c.hex)!.reject(error);
      return promises;
    }
    const budget = retrying ? Math.min(RETRY_MS, this.#timeoutMs) : left;
    const controller = new AbortController();
    const timer = setTimeout(
      () => controller.abort(new Error(`chunk fetch from ${this.#proxy} timed out after ${this.#timeoutMs} ms`)),
      budget,
    );
    void Promise.allSettled(
      ranges.map(async (range) => {
        try {
          const chunks = await this.#fetchRange(range, controller.signal);
          for (const [hex, bytes] of chunks) settle.get(hex)!.resolve(bytes);
        } catch (err) {
          if (retrying) this.#lastRetryFailed = Date.now();
          const error = controller.signal.aborted ? controller.signal.reason : err;
          for (const c of range.chunks) settle.get(c.hex)!.reject(error);
        }
      }),
    ).finally(() => clearTimeout(timer));
    return promises;
  }

  /** One merged range, retried with backoff on transient failures until the signal aborts. */
  async #fetchRange(range: PlannedRange, signal: AbortSignal): Promise<Map<string, Uint8Array>> {
    const url = layerDataUrl(this.#proxy, this.#name, range.layerDigest, this.#params, this.#ns);
    // Bounded twice: by the timeout, and by an attempt count for a zero-latency failure loop.
    for (let attempt = 0; ; attempt++) {
      signal.throwIfAborted();
      this.stats.requests++;
      const attemptStarted = Date.now();
      const id = tracing ? ++this.#traceId : 0;
      try {
        if (tracing) trace("chunk-request", { id, bytes: range.end - range.start + 1, chunks: range.chunks.map((c) => c.hex.slice(0, 16)) });
        const sent = performance.now();
        const fetchImpl: FetchLike = async (u, init) => {
          const res = await this.#fetch(u, init);
          const ms = performance.now() - sent;
          this.stats.roundTripMs = this.stats.roundTripMs === 0 ? ms : 0.75 * this.stats.roundTripMs + 0.25 * ms;
          if (tracing) trace("chunk-response", { id, status: res.status });
          return res;
        };
        const body = await fetchRange(fetchImpl, url, range.start, range.end, signal);
        const verifyStarted = tracing ? performance.now() : 0;
        const chunks = await this.#verify(range, body, url);
        if (tracing) trace("chunk-end", { id, bytes: body.length, verifyMs: performance.now() - verifyStarted });
        this.#failingSince = null;
        this.stats.fetches++;
        this.stats.fetchMs += Date.now() - attemptStarted;
        this.stats.bytesFetched += body.length;
        this.stats.chunksFetched += chunks.size;
        return chunks;
      } catch (err) {
        this.stats.errors++;
        if (tracing) trace("chunk-error", { id, error: errorMessage(err) });
        // The proxy unreachable, stalled or failing (not a wrong answer, which fails the read at once).
        // A stalled request counts from when it was sent: the fault began then.
        if (err instanceof TransientError || signal.aborted) this.#failingSince ??= attemptStarted;
        if (signal.aborted || !(err instanceof TransientError) || attempt >= 50) throw err;
        await sleep(Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** attempt), signal);
      }
    }
  }

  async #verify(range: PlannedRange, body: Uint8Array, url: string): Promise<Map<string, Uint8Array>> {
    const out = new Map<string, Uint8Array>();
    for (const { hex, record } of range.chunks) {
      const from = record.storedOffset - range.start;
      const stored = body.subarray(from, from + record.storedSize);
      let data: Uint8Array;
      try {
        data = await decodeChunkWith(record.compressed ? this.#codec : "none", stored, record.size, zlibInflateRaw);
      } catch (err) {
        throw new Error(`chunk ${hex} from ${url}: ${errorMessage(err)}`);
      }
      if (sha256Hex(data) !== hex) throw new Error(`chunk ${hex} from ${url} does not match its digest`);
      // A copy, so a cached chunk does not pin the whole merged response in memory.
      out.set(hex, data.buffer === body.buffer ? data.slice() : data);
    }
    return out;
  }
}

export { TransientError, type FetchLike };
