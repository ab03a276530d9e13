// Memory for the chunks read from the node's chunk cache, allocated once and reused. A warm
// sequential read allocated a new buffer per chunk, and V8 counts such memory towards its next full
// garbage collection: with the agent's small heap, one every 8 MiB or so read, which held a mount's
// sequential reads to about a third of what they reach without (docs/benchmarks.md).
//
// It is a SharedArrayBuffer so that the read workers (verified-file-read.ts) fill its slots in
// place: a buffer transferred from a worker counts as a new allocation too. Each slot is counted:
// whoever holds a view of it (the recent-chunk memory, a read whose reply is being sent) holds a
// reference, and a slot is reused only once none is left. A reference never given back only takes
// the slot out of use; bytes read while every slot is held go to a buffer of their own, as before.

/** One 1 MiB chunk (the proxy's default size) per slot; smaller chunks use a slot each too. */
export const SLOT_BYTES = 1 << 20;
/** The recent-chunk memory's 16 MiB, the disk readahead's 8 chunks, and reads being answered. */
export const SLOTS = 32;

export class ChunkSlab {
  readonly buffer: SharedArrayBuffer;
  readonly slotBytes: number;
  readonly #refs: Uint32Array;
  readonly #free: number[] = [];

  constructor(slots = SLOTS, slotBytes = SLOT_BYTES) {
    this.buffer = new SharedArrayBuffer(slots * slotBytes);
    this.slotBytes = slotBytes;
    this.#refs = new Uint32Array(slots);
    for (let i = slots - 1; i >= 0; i--) this.#free.push(i);
  }

  /** A free slot, held once by the caller; undefined when every slot is held. */
  take(): number | undefined {
    const slot = this.#free.pop();
    if (slot !== undefined) this.#refs[slot] = 1;
    return slot;
  }

  /** The first `length` bytes of `slot`. */
  view(slot: number, length: number): Uint8Array {
    return new Uint8Array(this.buffer, slot * this.slotBytes, Math.min(length, this.slotBytes));
  }

  /** One more reference to the slot `bytes` lie in; nothing for bytes outside the slab. */
  retain(bytes: Uint8Array): void {
    const slot = this.#slotOf(bytes);
    if (slot !== undefined) this.#refs[slot]!++;
  }

  /** Gives back a reference; the slot is free once none is left. Nothing for bytes outside the slab. */
  release(bytes: Uint8Array): void {
    const slot = this.#slotOf(bytes);
    if (slot !== undefined) this.releaseSlot(slot);
  }

  releaseSlot(slot: number): void {
    if (this.#refs[slot] === 0) throw new Error(`chunk slab slot ${slot} released more often than held`);
    if (--this.#refs[slot]! === 0) this.#free.push(slot);
  }

  /** Slots held now (for tests and stats). */
  get held(): number {
    return this.#refs.length - this.#free.length;
  }

  #slotOf(bytes: Uint8Array): number | undefined {
    return bytes.buffer === this.buffer ? Math.floor(bytes.byteOffset / this.slotBytes) : undefined;
  }
}

let shared: ChunkSlab | undefined;

/** The process's slab, shared by every mount and the read workers; made on first use. */
export function chunkSlab(): ChunkSlab {
  return (shared ??= new ChunkSlab());
}

/** One more reference to a chunk's bytes, if they lie in the slab. */
export function retainChunk(bytes: Uint8Array): void {
  shared?.retain(bytes);
}

/** Gives back the caller's reference to a chunk's bytes (from ChunkCache.get or RecentChunks.get). */
export function releaseChunk(bytes: Uint8Array): void {
  shared?.release(bytes);
}
