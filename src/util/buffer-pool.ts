// Reusable byte buffers for answers that are read into memory and written out (small range
// answers). A fresh buffer per answer is external memory to V8: at thousands of answers a second
// it forces a full garbage collection every few dozen milliseconds, which is most of the tail
// latency. Buffers come in power-of-two sizes; one that is never given back is simply collected.

export class BufferPool {
  readonly #free = new Map<number, Uint8Array<ArrayBuffer>[]>();
  readonly #maxBytesPerSize: number;
  readonly #smallest: number;

  /** Keeps at most `maxBytesPerSize` bytes of free buffers of each size. */
  constructor(opts: { maxBytesPerSize?: number; smallest?: number } = {}) {
    this.#maxBytesPerSize = opts.maxBytesPerSize ?? 8 * 2 ** 20;
    this.#smallest = opts.smallest ?? 4096;
  }

  /** A buffer of at least `length` bytes; its contents are whatever was there before. */
  take(length: number): Uint8Array<ArrayBuffer> {
    const size = Math.max(this.#smallest, 2 ** Math.ceil(Math.log2(Math.max(1, length))));
    return this.#free.get(size)?.pop() ?? new Uint8Array(size);
  }

  /** Returns a buffer from `take` once nothing reads it any more. */
  give(buffer: Uint8Array<ArrayBuffer>): void {
    const size = buffer.byteLength;
    let free = this.#free.get(size);
    if (!free) this.#free.set(size, (free = []));
    if ((free.length + 1) * size <= this.#maxBytesPerSize) free.push(buffer);
  }
}
