// Node's zlib as the layer gunzip: about 3× the portable decoder, and it inflates on a worker
// thread while the main thread hashes (docs/benchmarks.md). It stays as strict as the portable
// one: every input byte must belong to a gzip member, so trailing bytes are an error.
import { Duplex } from "node:stream";
import { createGunzip } from "node:zlib";
import { setGunzipFactory, type GunzipFactory } from "../convert/decompress.ts";

export const nodeGunzip: GunzipFactory = () => {
  const gunzip = createGunzip({ chunkSize: 256 * 1024 });
  const native = Duplex.toWeb(gunzip) as unknown as ReadableWritablePair<Uint8Array<ArrayBuffer>, Uint8Array>;
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

/** Makes every layer conversion in this process use node:zlib for gzip. */
export function useNodeGunzip(): void {
  setGunzipFactory(nodeGunzip);
}
