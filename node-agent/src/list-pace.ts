// How far a prefetch list (learned from other nodes, or recorded by hand) may run ahead of the
// reads. A list is a guess at what this node's reads will need, in order. Fetching it far ahead of
// them pays only if the guess is right; when another program runs than the one the list came from,
// its batches hold the link (and the agent's thread: inflating, hashing, caching) ahead of the
// reads that program makes. So a list runs at most LOOKAHEAD_BYTES ahead of the furthest place in it
// the reads have reached, and when most chunks read of late are not in it, it is off track: it then
// only fills pauses in the reads (prefetcher.ts).

/** Prefetched bytes a list may hold beyond the furthest place the reads reached: 1/3 s at 100 Mbit/s. */
export const LOOKAHEAD_BYTES = 4 * 2 ** 20;
/** A list is off track when fewer than half of the last JUDGED distinct chunks read were in it. */
const JUDGED = 16;

export class ListPace {
  /** Each chunk-table index's first place in the list. */
  readonly #position = new Map<number, number>();
  /** Places whose chunk the prefetcher fetched (or is fetching), with its stored bytes. */
  readonly #taken = new Map<number, number>();
  /** The furthest place in the list a read has needed, and the taken bytes beyond it. */
  #furthest = -1;
  #ahead = 0;
  readonly #judged = new Set<number>();
  #recent: boolean[] = [];
  #offTrack = false;

  constructor(list: number[]) {
    list.forEach((chunkIndex, place) => {
      if (!this.#position.has(chunkIndex)) this.#position.set(chunkIndex, place);
    });
  }

  /** The prefetcher took the chunk at `place` of the list into a batch. */
  took(place: number, bytes: number): void {
    this.#taken.set(place, bytes);
    if (place > this.#furthest) this.#ahead += bytes;
  }

  /** That batch failed: its chunks are no longer ahead of the reads. */
  dropped(place: number): void {
    const bytes = this.#taken.get(place);
    if (bytes === undefined) return;
    this.#taken.delete(place);
    if (place > this.#furthest) this.#ahead -= bytes;
  }

  /** A read needed this chunk; whether the list may now run further or its track changed. */
  saw(chunkIndex: number): boolean {
    if (this.#judged.has(chunkIndex)) return false;
    this.#judged.add(chunkIndex);
    const place = this.#position.get(chunkIndex);
    let changed = false;
    if (place !== undefined && place > this.#furthest) {
      // Chunks taken before this place were read or skipped: either way no longer ahead.
      for (let p = this.#furthest + 1; p <= place; p++) this.#ahead -= this.#taken.get(p) ?? 0;
      this.#furthest = place;
      changed = true;
    }
    this.#recent.push(place !== undefined);
    if (this.#recent.length > JUDGED) this.#recent.shift();
    const offTrack = this.#recent.length === JUDGED && this.#recent.filter(Boolean).length < JUDGED / 2;
    changed ||= offTrack !== this.#offTrack;
    this.#offTrack = offTrack;
    return changed;
  }

  get offTrack(): boolean {
    return this.#offTrack;
  }

  /** Whether the list is as far ahead of the reads as it may be. */
  get full(): boolean {
    return this.#ahead >= LOOKAHEAD_BYTES;
  }
}
