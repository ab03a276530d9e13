// How far a prefetch list (learned from other nodes, or recorded by hand) may run ahead of the
// reads. A list is a guess at what this node's reads will need, in order. Fetching it far ahead of
// them pays only if the guess is right; when another program runs than the one the list came from,
// its batches hold the link (and the agent's thread: inflating, hashing, caching) ahead of the
// reads that program makes. So a list may hold at most LOOKAHEAD_BYTES of chunks fetched and not
// yet read, and when most chunks read of late are not in it, it is off track: it then only fills
// pauses in the reads (prefetcher.ts).

/** Prefetched bytes not yet read a list may hold: 1/3 s at 100 Mbit/s. */
export const LOOKAHEAD_BYTES = 4 * 2 ** 20;
/** A list is off track when fewer than half of the last JUDGED distinct chunks read were in it. */
const JUDGED = 16;
/**
 * A fetched chunk the reads have not needed while they needed this many others of the list was
 * skipped by this run (a merged list holds a few chunks one node read and another does not): it
 * no longer counts as ahead.
 */
const SKIPPED_AFTER = 64;

export class ListPace {
  readonly #inList: Set<number>;
  /** Chunks the prefetcher fetched (or is fetching) that no read has needed yet, in the order taken. */
  readonly #unread = new Map<number, { bytes: number; matchedWhenTaken: number }>();
  #ahead = 0;
  /** Distinct chunks of the list the reads have needed. */
  #matched = 0;
  readonly #judged = new Set<number>();
  #recent: boolean[] = [];
  #offTrack = false;

  constructor(list: number[]) {
    this.#inList = new Set(list);
  }

  /** The prefetcher took this chunk (a chunk-table index) into a batch. */
  took(chunkIndex: number, bytes: number): void {
    if (this.#unread.has(chunkIndex)) return;
    this.#unread.set(chunkIndex, { bytes, matchedWhenTaken: this.#matched });
    this.#ahead += bytes;
  }

  /** Its batch failed: the chunk is no longer ahead of the reads. */
  dropped(chunkIndex: number): void {
    const entry = this.#unread.get(chunkIndex);
    if (!entry) return;
    this.#unread.delete(chunkIndex);
    this.#ahead -= entry.bytes;
  }

  /** A read needed this chunk; whether the list may now run further or its track changed. */
  saw(chunkIndex: number): boolean {
    if (this.#judged.has(chunkIndex)) return false;
    this.#judged.add(chunkIndex);
    const inList = this.#inList.has(chunkIndex);
    const ahead = this.#ahead;
    if (inList) {
      this.#matched++;
      this.dropped(chunkIndex); // read: no longer ahead
      for (const [index, entry] of this.#unread) {
        if (this.#matched - entry.matchedWhenTaken <= SKIPPED_AFTER) break; // taken in order: the rest are younger
        this.dropped(index);
      }
    }
    this.#recent.push(inList);
    if (this.#recent.length > JUDGED) this.#recent.shift();
    const offTrack = this.#recent.length === JUDGED && this.#recent.filter(Boolean).length < JUDGED / 2;
    const changed = this.#ahead !== ahead || offTrack !== this.#offTrack;
    this.#offTrack = offTrack;
    return changed;
  }

  get offTrack(): boolean {
    return this.#offTrack;
  }

  /** Whether the list holds as many unread bytes as it may. */
  get full(): boolean {
    return this.#ahead >= LOOKAHEAD_BYTES;
  }
}
