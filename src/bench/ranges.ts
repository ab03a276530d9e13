// The engine of `skiff bench ranges`: N concurrent workers send single-range GETs for one blob over
// one keep-alive undici Pool and check every answer (206, exact Content-Range, body length, and
// optionally the bytes against a local copy). Node only: it drives undici's dispatch() directly, the
// cheapest way undici offers to send a request, because a load generator must not be the bottleneck;
// measured, this engine costs no more CPU per request than a dispatch() whose handler does nothing.
import { readFile } from "node:fs/promises";
import { type Dispatcher, Pool } from "undici";
import { Histogram } from "./histogram.ts";

export const ERROR_KINDS = ["status", "content-range", "short", "long", "body-mismatch", "network", "timeout"] as const;
export type ErrorKind = (typeof ERROR_KINDS)[number];

/** Range lengths: fixed when min === max, else uniform in [min, max]. */
export interface SizeSpec {
  min: number;
  max: number;
}

/** Explicit ranges, cycled in order across all workers (a pattern file's `offset length` lines). */
export type RangeList = ReadonlyArray<{ offset: number; length: number }>;
export type Pattern = "random" | "sequential" | RangeList;

export interface RangeBenchOptions {
  url: string;
  durationMs: number;
  /** Stop after this many requests, if sooner than the duration. */
  maxRequests?: number;
  concurrency: number;
  size: SizeSpec;
  pattern: Pattern;
  /** The blob's bytes; when given, every body is compared with them. */
  reference?: Uint8Array;
  /** Extra request headers, e.g. Authorization. */
  headers?: ReadonlyArray<[string, string]>;
  /** Seed of the random pattern and random lengths: the same seed gives each worker the same ranges. */
  seed?: number;
  /** Limit on waiting for headers, and between body chunks (undici's headersTimeout / bodyTimeout). */
  timeoutMs?: number;
  /** Called about ten times a second with the running totals. */
  onProgress?: (p: BenchProgress) => void;
}

export interface BenchProgress {
  elapsedMs: number;
  requests: number;
  errors: number;
  bytes: number;
}

export interface RangeBenchResult {
  blobSize: number;
  requests: number;
  errors: number;
  errorsByKind: Record<ErrorKind, number>;
  /** Body bytes received, in all responses. */
  bytes: number;
  elapsedMs: number;
  rps: number;
  /** 10^6 bytes per second. */
  mbps: number;
  /** Latency from sending the request to its last body byte, in ms (answered requests only). */
  p50: number;
  p90: number;
  p99: number;
  p999: number;
  max: number;
  /** Time to the response headers, in ms. */
  ttfbP50: number;
  ttfbP99: number;
  /** The first error of each kind, for a human to start from. */
  firstErrors: Partial<Record<ErrorKind, string>>;
}

/**
 * The blob's size: HEAD's Content-Length, or else the total in the Content-Range of `bytes=0-0`.
 * Uses its own short-lived Pool so a caller can probe before deciding the run's parameters.
 */
export async function probeSize(url: string, headers: ReadonlyArray<[string, string]> = [], timeoutMs = 10_000): Promise<number> {
  const u = new URL(url);
  const pool = new Pool(u.origin, { connections: 1, headersTimeout: timeoutMs, bodyTimeout: timeoutMs });
  const path = u.pathname + u.search;
  const flat = headers.flat();
  try {
    const head = await pool.request({ path, method: "HEAD", headers: flat });
    await head.body.dump();
    const length = Number(head.headers["content-length"]);
    if (head.statusCode === 200 && Number.isSafeInteger(length) && length > 0) return length;
    const get = await pool.request({ path, method: "GET", headers: [...flat, "range", "bytes=0-0"] });
    await get.body.dump();
    const total = /^bytes 0-0\/(\d+)$/.exec(String(get.headers["content-range"] ?? ""))?.[1];
    if (get.statusCode === 206 && total !== undefined && Number(total) > 0) return Number(total);
    throw new Error(`cannot learn the blob's size: HEAD answered ${head.statusCode}, bytes=0-0 answered ${get.statusCode}${get.headers["content-range"] ? ` with Content-Range ${get.headers["content-range"]}` : " without Content-Range"}`);
  } finally {
    await pool.close();
  }
}

/**
 * Reads the reference copy whole into memory: a few hundred MB is cheap next to a run, and comparing
 * against a Buffer slice is a memcmp per chunk with no I/O on the hot path. readFile caps it at 2 GiB.
 */
export async function loadReference(path: string): Promise<Buffer> {
  return readFile(path);
}

/** Parses a pattern file: one `offset length` per line; blank lines and `#` comments are skipped. */
export function parsePatternFile(text: string): RangeList {
  const ranges: { offset: number; length: number }[] = [];
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.replace(/#.*/, "").trim();
    if (line === "") continue;
    const m = /^(\d+)\s+(\d+)$/.exec(line);
    const offset = Number(m?.[1]);
    const length = Number(m?.[2]);
    if (!m || !Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || length < 1) {
      throw new Error(`line ${i + 1}: expected "offset length" (whole numbers, length ≥ 1), got ${JSON.stringify(lines[i])}`);
    }
    ranges.push({ offset, length });
  }
  if (ranges.length === 0) throw new Error("no ranges in the pattern file");
  return ranges;
}

/** mulberry32: small, fast and good enough to spread offsets; seeded per worker for reproducibility. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  const next32 = () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
  // 53 random bits, so offsets stay fine-grained in blobs over 4 GiB.
  return () => (next32() * 2 ** 21 + (next32() >>> 11)) / 2 ** 53;
}

/** Yields [start, end] (inclusive) for one worker. */
type RangePicker = () => [number, number];

function picker(o: RangeBenchOptions, blobSize: number, worker: number, shared: { next: number }): RangePicker {
  const random = rng(Math.imul(o.seed ?? 1, 0x9e3779b1) + worker);
  const { min, max } = o.size;
  const length = min === max ? () => Math.min(min, blobSize) : () => Math.min(blobSize, min + Math.floor(random() * (max - min + 1)));
  const pattern = o.pattern;
  if (pattern === "random") {
    return () => {
      const len = length();
      const start = Math.floor(random() * (blobSize - len + 1));
      return [start, start + len - 1];
    };
  }
  if (pattern === "sequential") {
    // Each worker walks its own slice of the blob, wrapping to the slice's start at its end.
    const from = Math.floor((worker * blobSize) / o.concurrency);
    const to = Math.floor(((worker + 1) * blobSize) / o.concurrency);
    let cursor = from;
    return () => {
      const len = length();
      if (cursor >= to || cursor + len > blobSize) cursor = from;
      const start = Math.min(cursor, blobSize - len);
      cursor += len;
      return [start, start + len - 1];
    };
  }
  return () => {
    const r = pattern[shared.next++ % pattern.length]!;
    return [r.offset, Math.min(r.offset + r.length, blobSize) - 1];
  };
}

function timeoutCode(err: unknown): boolean {
  const code = (err as { code?: string })?.code;
  return code === "UND_ERR_HEADERS_TIMEOUT" || code === "UND_ERR_BODY_TIMEOUT" || code === "UND_ERR_CONNECT_TIMEOUT";
}

/** What every request of a run shares: where to send, what to expect, and the running totals. */
class Run {
  requests = 0;
  issued = 0;
  errors = 0;
  bytes = 0;
  readonly latency = new Histogram();
  readonly ttfb = new Histogram();
  readonly errorsByKind = Object.fromEntries(ERROR_KINDS.map((k) => [k, 0])) as Record<ErrorKind, number>;
  readonly firstErrors: Partial<Record<ErrorKind, string>> = {};
  #running = 0;
  #done: () => void = () => {};

  constructor(
    readonly pool: Pool,
    readonly path: string,
    readonly baseHeaders: string[],
    readonly size: number,
    readonly ref: Buffer | undefined,
    readonly deadline: number,
    readonly maxRequests: number,
  ) {}

  /** Runs one worker per picker until the deadline or the request budget; resolves when all have stopped. */
  run(pickers: RangePicker[]): Promise<void> {
    return new Promise((resolve) => {
      this.#running = pickers.length;
      this.#done = resolve;
      for (const pick of pickers) this.issue(pick);
    });
  }

  /** A worker's next request, or its end. */
  issue(pick: RangePicker): void {
    if (this.issued >= this.maxRequests || performance.now() >= this.deadline) {
      if (--this.#running === 0) this.#done();
      return;
    }
    this.issued++;
    const [start, end] = pick();
    const headers = this.baseHeaders.length ? [...this.baseHeaders, "range", `bytes=${start}-${end}`] : ["range", `bytes=${start}-${end}`];
    // undici's legacy handler callbacks are its native interface in v7: the newer onResponse* API is
    // adapted on top and parses every header into an object, and request() adds a stream per body.
    // At tens of thousands of requests a second that overhead is the benchmark's ceiling.
    this.pool.dispatch({ path: this.path, method: "GET", headers }, new RangeRequest(this, pick, start, end) as Dispatcher.DispatchHandler);
  }

  settle(r: RangeRequest, kind: ErrorKind | null, detail: string): void {
    this.requests++;
    // Latency counts every answered request, good or bad; a request that got no answer has none.
    if (kind !== "network" && kind !== "timeout") this.latency.recordMs(performance.now() - r.t0);
    if (kind) {
      this.errors++;
      this.errorsByKind[kind]++;
      this.firstErrors[kind] ??= `bytes=${r.start}-${r.end}: ${detail}`;
    }
    this.issue(r.pick);
  }
}

/** One range request: checks the answer as it arrives, then hands the worker its next request. */
class RangeRequest {
  readonly t0 = performance.now();
  readonly expected: number;
  status = 0;
  problem: ErrorKind | null = null;
  detail = "";
  received = 0;
  mismatch = false;
  settled = false;

  constructor(
    readonly run: Run,
    readonly pick: RangePicker,
    readonly start: number,
    readonly end: number,
  ) {
    this.expected = end - start + 1;
  }

  onConnect(): void {}

  onHeaders(status: number, raw: Buffer[]): boolean {
    if (status < 200) return true; // 1xx: the real answer follows
    this.status = status;
    this.run.ttfb.recordMs(performance.now() - this.t0);
    if (status !== 206) {
      this.#problem("status", `status ${status}`);
      return true;
    }
    // Raw header pairs: only names of Content-Range's length are decoded.
    let range: string | undefined;
    let count = 0;
    for (let i = 0; i < raw.length; i += 2) {
      if (raw[i]!.length === 13 && raw[i]!.toString("latin1").toLowerCase() === "content-range") {
        range = raw[i + 1]!.toString("latin1");
        count++;
      }
    }
    const want = `bytes ${this.start}-${this.end}/${this.run.size}`;
    if (count !== 1 || range !== want) {
      this.#problem("content-range", `Content-Range ${count > 1 ? `given ${count} times` : JSON.stringify(range ?? null)}, expected ${JSON.stringify(want)}`);
    }
    return true;
  }

  onData(chunk: Buffer): boolean {
    const ref = this.run.ref;
    if (ref && this.problem === null && !this.mismatch && this.received < this.expected) {
      const n = Math.min(chunk.length, this.expected - this.received);
      const at = this.start + this.received;
      if (ref.compare(chunk, 0, n, at, at + n) !== 0) this.mismatch = true;
    }
    this.received += chunk.length;
    this.run.bytes += chunk.length;
    return true;
  }

  onComplete(): void {
    if (this.problem) return this.#settle(this.problem, this.detail);
    if (this.received < this.expected) return this.#settle("short", `${this.received} of ${this.expected} bytes`);
    if (this.received > this.expected) return this.#settle("long", `${this.received} bytes, expected ${this.expected}`);
    if (this.mismatch) return this.#settle("body-mismatch", "bytes differ from the reference");
    this.#settle(null, "");
  }

  onError(err: Error): void {
    if (this.problem) return this.#settle(this.problem, this.detail);
    if (timeoutCode(err)) return this.#settle("timeout", err.message);
    // A body cut off (or overrunning) against its Content-Length is a length fault, not the network's.
    if (this.status === 206 && this.received < this.expected) return this.#settle("short", `${this.received} of ${this.expected} bytes (${err.message})`);
    if (this.status === 206 && this.received > this.expected) return this.#settle("long", `${this.received} bytes, expected ${this.expected} (${err.message})`);
    this.#settle("network", err.message);
  }

  #problem(kind: ErrorKind, detail: string): void {
    this.problem ??= kind;
    if (this.problem === kind && !this.detail) this.detail = detail;
  }

  #settle(kind: ErrorKind | null, detail: string): void {
    if (this.settled) return;
    this.settled = true;
    this.run.settle(this, kind, detail);
  }
}

export async function runRangeBench(o: RangeBenchOptions, blobSize?: number): Promise<RangeBenchResult> {
  const size = blobSize ?? (await probeSize(o.url, o.headers, o.timeoutMs));
  if (o.reference && o.reference.length !== size) {
    throw new Error(`the reference has ${o.reference.length} bytes but the blob has ${size}`);
  }
  if (typeof o.pattern === "object") {
    const bad = o.pattern.find((r) => r.offset >= size);
    if (bad) throw new Error(`pattern range at offset ${bad.offset} starts past the blob's end (${size} bytes)`);
  }
  const u = new URL(o.url);
  const timeoutMs = o.timeoutMs ?? 10_000;
  const pool = new Pool(u.origin, {
    connections: o.concurrency,
    pipelining: 1,
    headersTimeout: timeoutMs,
    bodyTimeout: timeoutMs,
    keepAliveTimeout: 60_000,
  });
  const ref = o.reference ? Buffer.from(o.reference.buffer, o.reference.byteOffset, o.reference.length) : undefined;
  const started = performance.now();
  const run = new Run(pool, u.pathname + u.search, (o.headers ?? []).flat(), size, ref, started + o.durationMs, o.maxRequests ?? Infinity);
  const snapshot = () => ({ elapsedMs: performance.now() - started, requests: run.requests, errors: run.errors, bytes: run.bytes });
  const progress = o.onProgress ? setInterval(() => o.onProgress!(snapshot()), 100) : undefined;
  const shared = { next: 0 };
  try {
    await run.run(Array.from({ length: o.concurrency }, (_, w) => picker(o, size, w, shared)));
  } finally {
    if (progress) clearInterval(progress);
  }
  const elapsedMs = performance.now() - started;
  o.onProgress?.(snapshot());
  await pool.destroy();
  const { requests, errors, errorsByKind, bytes, latency, ttfb, firstErrors } = run;
  const seconds = elapsedMs / 1000;
  return {
    blobSize: size,
    requests,
    errors,
    errorsByKind,
    bytes,
    elapsedMs,
    rps: requests / seconds,
    mbps: bytes / 1e6 / seconds,
    p50: latency.quantileMs(0.5),
    p90: latency.quantileMs(0.9),
    p99: latency.quantileMs(0.99),
    p999: latency.quantileMs(0.999),
    max: latency.maxMs(),
    ttfbP50: ttfb.quantileMs(0.5),
    ttfbP99: ttfb.quantileMs(0.99),
    firstErrors,
  };
}
