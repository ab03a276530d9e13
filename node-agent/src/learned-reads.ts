// Learned prefetch, the node's side: before a container reads anything, the chunks that the image's
// containers read first on other nodes (the edge merges their reports) are fetched in that order,
// behind the container's own reads; and this node reports what its container read first, once, so
// that the next node starts faster. No list to record by hand, no image rebuild.
//
// Neither side is on a read's critical path: the list is asked for with a short timeout and any
// failure means no learned prefetch; a report is sent in the background and its failure only logged.
import type { Bootstrap } from "../../src/format/decode.ts";
import { toHex } from "../../src/hash/hasher.ts";
import { fetchLearnedReads, reportReads, type FetchLike } from "../../src/client/lazy-api.ts";
import { MAX_REPORT_DIGESTS } from "../../src/format/prefetch-list.ts";

/** Where an image's learned reads live on the edge. */
export interface LearnedReadsSource {
  proxy: string;
  name: string;
  ns?: string;
  /** The platform image manifest the bootstrap was built from. */
  manifestDigest: string;
  /** The bootstrap's conversion parameters (params id). */
  params: string;
  fetchImpl?: FetchLike;
  log: (message: string) => void;
}

/** A mount asks no longer than this for the list: a slow edge means starting without it. */
const FETCH_TIMEOUT_MS = 3_000;
const REPORT_TIMEOUT_MS = 10_000;
/** A container's start is over when no new chunk has been read for this long. */
const QUIET_MS = 5_000;
/** Nor is anything read after this long part of its start. */
const WINDOW_MS = 60_000;
const TICK_MS = 500;

/** The digests (hex) the edge has learned for the image, best first; empty when none or unreachable. */
export async function learnedReads(s: LearnedReadsSource): Promise<string[]> {
  try {
    return (await fetchLearnedReads(s.proxy, s.name, s.manifestDigest, s.params, { ns: s.ns, fetchImpl: s.fetchImpl, timeoutMs: FETCH_TIMEOUT_MS })) ?? [];
  } catch (err) {
    s.log(`learned prefetch list: ${(err as Error).message}; starting without it`);
    return [];
  }
}

/** The digest (hex) of a bootstrap's chunk, as reads are recorded. */
export const chunkHex = (bootstrap: Bootstrap, chunkIndex: number) => toHex(bootstrap.chunk(chunkIndex).digest);

/**
 * The order in which a container first reads chunks while it starts, reported to the edge once:
 * when reads have paused for QUIET_MS, when WINDOW_MS have passed, or at stop(), whichever comes first.
 */
export class FirstReads {
  readonly #source: LearnedReadsSource;
  readonly #seen = new Set<string>();
  readonly #started = Date.now();
  #lastNew = 0;
  #count = 0;
  #reported: Promise<void> | undefined;
  readonly #timer: NodeJS.Timeout;

  constructor(source: LearnedReadsSource) {
    this.#source = source;
    this.#timer = setInterval(() => {
      const now = Date.now();
      if ((this.#seen.size > 0 && now - this.#lastNew >= QUIET_MS) || now - this.#started >= WINDOW_MS) void this.report();
    }, TICK_MS);
    this.#timer.unref();
  }

  /** A read needed this chunk. */
  saw(hex: string): void {
    if (this.#reported || this.#seen.has(hex) || this.#seen.size >= MAX_REPORT_DIGESTS) return;
    this.#seen.add(hex);
    this.#lastNew = Date.now();
  }

  /** Chunks recorded (and, once reported, sent). */
  get count(): number {
    return this.#reported ? this.#count : this.#seen.size;
  }

  /** Sends the report (once; later calls wait for the same one). Never rejects. */
  report(): Promise<void> {
    clearInterval(this.#timer);
    return (this.#reported ??= this.#send());
  }

  async #send(): Promise<void> {
    const s = this.#source;
    const digests = [...this.#seen];
    // Nothing more is recorded: only the count stays (a node may run many images).
    this.#count = digests.length;
    this.#seen.clear();
    if (digests.length === 0) return;
    try {
      await reportReads(s.proxy, s.name, s.manifestDigest, s.params, digests, { ns: s.ns, fetchImpl: s.fetchImpl, timeoutMs: REPORT_TIMEOUT_MS });
      s.log(`reported the ${digests.length} chunks this start read first`);
    } catch (err) {
      s.log(`reporting the chunks read first: ${(err as Error).message}`);
    }
  }
}
