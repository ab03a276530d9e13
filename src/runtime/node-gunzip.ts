// Node's zlib as the layer gunzip: about 3× the portable decoder, and it inflates on a worker
// thread while the main thread hashes (docs/benchmarks.md). It stays as strict as the portable
// one: every input byte must belong to a gzip member, so trailing bytes are an error. The same
// plumbing serves node:zlib's zstd decoder where the runtime has one (./node-zstd.ts).
import type { Transform } from "node:stream";
import { createGunzip } from "node:zlib";
import type { GunzipFactory } from "../convert/decompress.ts";

/** Inflated bytes that may wait for the reader before zlib is paused. */
const OUTPUT_AHEAD = 8 * 2 ** 20;
/** Compressed bytes that may wait for zlib before the writer is held back. */
const INPUT_BATCH = 2 ** 20;

const cancelled = () => new Error("layer read cancelled");

/**
 * Output in pieces of up to 1 MiB: zlib hands each piece to JavaScript, and 256 KiB pieces cost
 * that hop four times as often (docs/benchmarks.md, "A cold edge against a warm one").
 */
export const ZLIB_OUTPUT_PIECE = 2 ** 20;

export const nodeGunzip: GunzipFactory = () => nodeZlibDecoder(createGunzip({ chunkSize: ZLIB_OUTPUT_PIECE }));

/** A node:zlib decoder as a web stream pair that refuses input bytes the decoder did not consume. */
export function nodeZlibDecoder(gunzip: Transform & { bytesWritten: number }): ReturnType<GunzipFactory> {
  let input: WritableStreamDefaultController | undefined;
  const native = {
    // Not Readable.toWeb: it copies every piece, and on a cold edge that was a third of a gigabyte
    // of copying and garbage per layer. zlib writes each piece into a buffer it then lets go of, so
    // a view of it is the reader's own. At most OUTPUT_AHEAD bytes wait for the converter.
    readable: new ReadableStream<Uint8Array<ArrayBuffer>>(
      {
        start(controller) {
          gunzip.on("data", (piece: Buffer) => {
            controller.enqueue(new Uint8Array(piece.buffer as ArrayBuffer, piece.byteOffset, piece.byteLength));
            if ((controller.desiredSize ?? 0) <= 0) gunzip.pause();
          });
          gunzip.once("end", () => controller.close());
          gunzip.once("error", (err) => controller.error(err));
          gunzip.pause();
        },
        pull: () => void gunzip.resume(),
        // The writable side fails too, so the cancel goes back up the pipe to the layer's source.
        cancel: () => {
          const reason = cancelled();
          gunzip.destroy(reason);
          input?.error(reason);
        },
      },
      { highWaterMark: OUTPUT_AHEAD, size: (piece) => piece.byteLength },
    ),
    writable: new WritableStream<Uint8Array>(
      {
        start: (controller) => void (input = controller),
        write: (piece) => {
          if (gunzip.destroyed) throw cancelled();
          pending.push(piece);
          pendingBytes += piece.byteLength;
          inflateNext();
          if (pendingBytes < INPUT_BATCH) return;
          return new Promise<void>((resolve, reject) => (roomWaiter = { resolve, reject }));
        },
        close: () =>
          new Promise<void>((resolve) => {
            if (pendingBytes > 0) gunzip.write(takePending());
            gunzip.end(resolve);
          }),
        abort: (reason) => void gunzip.destroy(reason instanceof Error ? reason : new Error(String(reason))),
      },
      { highWaterMark: 1 },
    ),
  };
  // Pieces that arrive while zlib inflates wait and go in as one write when it is done: every write
  // is a trip to the thread pool and back, and a cold edge's 64 KiB pieces each took one
  // (docs/benchmarks.md, "A cold edge against a warm one"). A piece that finds zlib idle goes at once.
  let pending: Uint8Array[] = [];
  let pendingBytes = 0;
  let inflating = false;
  let roomWaiter: { resolve: () => void; reject: (err: Error) => void } | null = null;
  const takePending = (): Uint8Array => {
    const piece = pending.length === 1 ? pending[0]! : Buffer.concat(pending, pendingBytes);
    pending = [];
    pendingBytes = 0;
    return piece;
  };
  /** Lets the writer held back (if any) go on, or fail with `err`. */
  const letGo = (err?: Error) => {
    const waiter = roomWaiter;
    roomWaiter = null;
    if (err) waiter?.reject(err);
    else waiter?.resolve();
  };
  // When zlib goes away (cancelled, failed) the write it had may never call back.
  gunzip.once("close", () => letGo(cancelled()));
  const inflateNext = () => {
    if (inflating || pendingBytes === 0) return;
    inflating = true;
    gunzip.write(takePending(), (err) => {
      inflating = false;
      if (err) return letGo(gunzip.destroyed ? cancelled() : err);
      inflateNext();
      letGo();
    });
  };
  let fed = 0;
  const count = new TransformStream<Uint8Array, Uint8Array>({
    transform(chunk, controller) {
      fed += chunk.byteLength;
      controller.enqueue(chunk);
    },
  });
  const check = new TransformStream<Uint8Array<ArrayBuffer>, Uint8Array<ArrayBuffer>>({
    flush() {
      if (gunzip.bytesWritten !== fed) throw new Error(`${fed - gunzip.bytesWritten} bytes after the end of the compressed data`);
    },
  });
  void count.readable.pipeTo(native.writable).catch(() => {});
  void native.readable.pipeTo(check.writable).catch(() => {});
  return { writable: count.writable, readable: check.readable };
};
