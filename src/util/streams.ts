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

/**
 * Gathers small writes into pieces of up to `size` bytes before they reach `sink`: a store write
 * costs about as much for 1 KiB as for 1 MiB, and most files of a layer are a few KiB. Bytes given
 * to `write` may be reused once it resolves; `flush` writes what is gathered.
 */
export class BatchedWriter {
  readonly #sink: (bytes: Uint8Array) => Promise<void>;
  readonly #batch: Uint8Array;
  #filled = 0;

  constructor(sink: (bytes: Uint8Array) => Promise<void>, size: number) {
    this.#sink = sink;
    this.#batch = new Uint8Array(size);
  }

  async write(bytes: Uint8Array): Promise<void> {
    if (this.#filled + bytes.byteLength > this.#batch.byteLength) await this.flush();
    if (bytes.byteLength >= this.#batch.byteLength) return this.#sink(bytes);
    this.#batch.set(bytes, this.#filled);
    this.#filled += bytes.byteLength;
  }

  async flush(): Promise<void> {
    if (this.#filled === 0) return;
    await this.#sink(this.#batch.subarray(0, this.#filled));
    this.#filled = 0;
  }
}
