// Reading bounded amounts of a web stream: every body read whole goes through one of these, so a
// hostile or broken peer can't make the process buffer without limit.

/** A stream went past the limit it was read with (the rest was cancelled). */
export class StreamTooLarge extends Error {
  override name = "StreamTooLarge";
  constructor(readonly limit: number) {
    super(`object larger than ${limit} bytes`);
  }
}

export async function readAll(stream: ReadableStream<Uint8Array>, limit = Infinity): Promise<Uint8Array<ArrayBuffer>> {
  const parts: Uint8Array[] = [];
  let total = 0;
  const reader = stream.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > limit) {
      await reader.cancel();
      throw new StreamTooLarge(limit);
    }
    parts.push(value);
  }
  return concatBytes(parts);
}

/** The parts laid end to end in one new buffer. */
export function concatBytes(parts: Uint8Array[]): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.byteLength;
  }
  return out;
}

/** The first `limit` bytes of a stream (the rest is cancelled): for bodies only worth a glance. */
export async function readPrefix(stream: ReadableStream<Uint8Array>, limit: number): Promise<Uint8Array<ArrayBuffer>> {
  const reader = stream.getReader();
  const out = new Uint8Array(limit);
  let at = 0;
  while (at < limit) {
    const { done, value } = await reader.read();
    if (done) return out.slice(0, at);
    const take = Math.min(value.byteLength, limit - at);
    out.set(value.subarray(0, take), at);
    at += take;
  }
  await reader.cancel();
  return out;
}

/**
 * Reads `stream` in pieces of at least `min` bytes (the last may be smaller), each a fresh copy the
 * reader owns. Some runtimes hand out network bodies in 4 KiB pieces (workerd), and every piece costs
 * a hash update, a store write and a client write: gathering them makes that cost per 64 KiB. The
 * copy means a piece held back or queued for a slow client can't change under it, whatever the
 * runtime does with the buffers it read into.
 */
export function coalesce(stream: ReadableStream<Uint8Array>, min: number): ReadableStream<Uint8Array> {
  const reader = stream.getReader();
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      const parts: Uint8Array[] = [];
      let size = 0;
      while (size < min) {
        const { done, value } = await reader.read();
        if (done) break;
        parts.push(value);
        size += value.byteLength;
      }
      if (size === 0) return controller.close();
      controller.enqueue(concatBytes(parts));
    },
    cancel: (reason) => reader.cancel(reason),
  });
}

/** `stream` as it is, calling `done` once it has been read to its end, has failed or was cancelled. */
export function onStreamEnd<T>(stream: ReadableStream<T>, onEnd: () => void): ReadableStream<T> {
  const reader = stream.getReader();
  let ended = false;
  const done = () => {
    if (!ended) (ended = true), onEnd();
  };
  return new ReadableStream<T>({
    async pull(controller) {
      let next: ReadableStreamReadResult<T>;
      try {
        next = await reader.read();
      } catch (err) {
        done();
        throw err;
      }
      if (next.done) {
        controller.close();
        done();
      } else {
        controller.enqueue(next.value);
      }
    },
    cancel(reason) {
      done();
      return reader.cancel(reason);
    },
  });
}

/** A stream of one piece: `bytes` (none when empty). */
export function bytesStream(bytes: Uint8Array): ReadableStream<Uint8Array> {
  return new ReadableStream({
    start(controller) {
      if (bytes.byteLength) controller.enqueue(bytes);
      controller.close();
    },
  });
}

/** Pieces a BatchedWriter holds at most: the one being gathered and one queued for the sink. */
const PIECES_IN_HAND = 2;

/**
 * Gathers writes into pieces of `size` bytes before they reach `sink`: a store write costs about as
 * much for 1 KiB as for 1 MiB, and most files of a layer are a few KiB. The pieces are written one
 * at a time while the caller goes on (a conversion's thread waited for the store a tenth of its
 * time: docs/benchmarks.md, "Converting layers"). Bytes given to `write` are copied, and may be
 * reused once it has returned nothing or its promise has resolved, unless they are given with
 * `release`: then the writer calls it once it is done with them, at once when it copied them, after
 * their write when they make a piece of at least `size` bytes, which is written as it is, not
 * copied (not at all if a write failed). A failed sink write fails the next `write` or `flush`, and
 * nothing after it is written; `flush` writes what is gathered and waits for every write.
 */
export class BatchedWriter {
  readonly #sink: (bytes: Uint8Array) => Promise<void>;
  readonly #size: number;
  #buffer: Uint8Array;
  #filled = 0;
  /** Pieces handed to the sink, oldest first, each with its write (which waits for the one before) and its buffer if it is ours. */
  readonly #queued: { written: Promise<void>; buffer: Uint8Array | null }[] = [];
  /** Our buffers whose pieces are written, to gather into again. */
  readonly #free: Uint8Array[] = [];

  constructor(sink: (bytes: Uint8Array) => Promise<void>, size: number) {
    this.#sink = sink;
    this.#size = size;
    this.#buffer = new Uint8Array(size);
  }

  /**
   * Nothing to wait for (undefined) when the bytes only went into the piece being gathered, which
   * is most writes: a converter writes each small file's chunk, and makes no promise for it.
   */
  write(bytes: Uint8Array, release?: () => void): Promise<void> | undefined {
    if (this.#filled + bytes.byteLength < this.#size) {
      this.#buffer.set(bytes, this.#filled);
      this.#filled += bytes.byteLength;
      release?.();
      return undefined;
    }
    return this.#write(bytes, release);
  }

  async #write(bytes: Uint8Array, release?: () => void): Promise<void> {
    if (release && bytes.byteLength >= this.#size) {
      if (this.#filled > 0) await this.#send();
      return this.#queue(bytes, null, release);
    }
    for (let at = 0; at < bytes.byteLength; ) {
      const n = Math.min(bytes.byteLength - at, this.#size - this.#filled);
      this.#buffer.set(n === bytes.byteLength ? bytes : bytes.subarray(at, at + n), this.#filled);
      this.#filled += n;
      at += n;
      if (this.#filled === this.#size) await this.#send();
    }
    release?.();
  }

  async flush(): Promise<void> {
    if (this.#filled > 0) await this.#send();
    while (this.#queued.length > 0) await this.#reclaim();
  }

  /** Waits for the writes in progress, if any, whatever their outcome: before the sink is cancelled. */
  async settle(): Promise<void> {
    await this.#queued.at(-1)?.written.catch(() => {});
  }

  /** Queues what is gathered, and gathers on into a buffer of ours that is written, or a new one. */
  async #send(): Promise<void> {
    const filled = this.#filled;
    this.#filled = 0;
    await this.#queue(this.#buffer.subarray(0, filled), this.#buffer);
    this.#buffer = this.#free.pop() ?? new Uint8Array(this.#size);
  }

  /** Writes `piece` after the pieces queued before it, then waits while too many are queued. */
  async #queue(piece: Uint8Array, buffer: Uint8Array | null, release?: () => void): Promise<void> {
    const before = this.#queued.at(-1)?.written ?? Promise.resolve();
    const written = before.then(() => this.#sink(piece));
    // A failure is the next call's; until then it must not count as unhandled.
    written.then(release, () => {});
    this.#queued.push({ written, buffer });
    while (this.#queued.length >= PIECES_IN_HAND) await this.#reclaim();
  }

  /** Waits for the oldest queued piece to be written, and frees its buffer if it is ours. */
  async #reclaim(): Promise<void> {
    const oldest = this.#queued[0]!;
    await oldest.written;
    this.#queued.shift();
    if (oldest.buffer) this.#free.push(oldest.buffer);
  }
}
