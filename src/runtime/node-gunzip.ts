// Node's zlib as the layer gunzip: about 3× the portable decoder, and it inflates on a worker
// thread while the main thread hashes (docs/benchmarks.md). It stays as strict as the portable
// one: every input byte must belong to a gzip member, so trailing bytes are an error.
import { Readable } from "node:stream";
import { createGunzip } from "node:zlib";
import type { GunzipFactory } from "../convert/decompress.ts";

export const nodeGunzip: GunzipFactory = () => {
  const gunzip = createGunzip({ chunkSize: 256 * 1024 });
  // Node's toWeb adapters take a byte stream's highWaterMark (16 KiB) as a count of chunks, so a
  // fast source would queue the whole compressed layer. Both sides here wait for zlib instead; its
  // output may run up to 32 pieces (8 MiB) ahead of the converter.
  const native = {
    readable: Readable.toWeb(gunzip, { strategy: { highWaterMark: 32 } }) as unknown as ReadableStream<Uint8Array<ArrayBuffer>>,
    writable: new WritableStream<Uint8Array>(
      {
        write: (chunk) =>
          new Promise<void>((resolve, reject) => {
            if (gunzip.write(chunk)) return resolve();
            const done = (err?: Error) => {
              gunzip.off("drain", done);
              gunzip.off("error", done);
              if (err) reject(err);
              else resolve();
            };
            gunzip.once("drain", done);
            gunzip.once("error", done);
          }),
        close: () => new Promise<void>((resolve) => gunzip.end(resolve)),
        abort: (reason) => void gunzip.destroy(reason instanceof Error ? reason : new Error(String(reason))),
      },
      { highWaterMark: 1 },
    ),
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
      if (gunzip.bytesWritten !== fed) throw new Error(`${fed - gunzip.bytesWritten} bytes after the last gzip member`);
    },
  });
  void count.readable.pipeTo(native.writable).catch(() => {});
  void native.readable.pipeTo(check.writable).catch(() => {});
  return { writable: count.writable, readable: check.readable };
};
