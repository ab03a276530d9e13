// Cutting a layer: compressed bytes → decompress → tar → every regular file's content in chunks of
// `chunkSize` bytes (a file's last one shorter), each named by its sha256. This is the part of a
// conversion whose cost grows with the layer's expanded size; what is left for the converter
// (./layer.ts) is the tree, deduplication, encoding and writing.
import { hashBytes, type HasherFactory } from "../hash/hasher.ts";
import { decompressLayer, LayerFormatError, type LayerDecoders } from "./decompress.ts";
import { readTar, type TarEntry } from "./tar.ts";

/**
 * One entry, then (for a regular file) its chunks in order. A file entry's chunks follow it before
 * the next entry; other entries have none. Chunks are cut from every regular file: the converter
 * ignores those of an entry its tree leaves out.
 */
export type CutItem = { entry: TarEntry } | { chunk: Uint8Array; hex: string };

export interface CutOptions {
  /** The layer's digest, for messages. */
  layer: string;
  mediaType: string;
  chunkSize: number;
  /** Refuse a layer whose uncompressed tar grows past this many bytes. */
  maxExpandedBytes: number;
  /**
   * Chunk buffers the consumer is done with, cut into again: a fresh megabyte per chunk was that
   * much more garbage, and collecting it was a fifth of a conversion. With a pool, a file's last,
   * partial chunk is handed on as a view of its chunk buffer too, for the consumer to give back.
   */
  spare?: Uint8Array[];
}

/**
 * Cuts the layer read from `compressed` into items; `decoders` are the runtime's, if any.
 * Leaving the iteration early cancels `compressed`. The caller checks the compressed bytes (digest,
 * size): the end of the items means the decompressor read all of them, its trailer included.
 */
export async function* cutLayer(compressed: ReadableStream<Uint8Array>, opts: CutOptions, hasher: HasherFactory, decoders?: LayerDecoders): AsyncGenerator<CutItem> {
  const { chunkSize, maxExpandedBytes } = opts;
  const decompressed = decompressLayer(compressed, opts.mediaType, decoders).getReader();
  let expanded = 0;
  // The tar reader stops at the end-of-archive marker; whatever follows (padding, the gzip
  // trailer) must still be read so the digest covers every byte. So it gets a view it can't cancel.
  const tarInput = new ReadableStream<Uint8Array>({
    async pull(controller) {
      const { done, value } = await decompressed.read();
      if (done) return controller.close();
      expanded += value.byteLength;
      // Converting costs time in the expanded size: a decompression bomb stops here, not at its end.
      if (expanded > maxExpandedBytes) {
        void decompressed.cancel().catch(() => {});
        throw new LayerFormatError(`layer ${opts.layer} expands past ${maxExpandedBytes} bytes, this converter's limit`);
      }
      controller.enqueue(value);
    },
  });
  const named = (chunk: Uint8Array): CutItem => ({ chunk, hex: hashBytes(hasher, "sha256", chunk) });

  let finished = false;
  try {
    // A full chunk is handed on in its own buffer and a new one is taken. So is a file's last,
    // partial chunk when the consumer gives buffers back; without a pool it is copied out, so that
    // small files don't each hold a whole chunk's buffer.
    const take = () => opts.spare?.pop() ?? new Uint8Array(chunkSize);
    let buffer = take();
    // Every body piece is copied into chunk buffers before the next is read, so the decoder may
    // write over the pieces the tar reader is done with.
    const release = decoders?.unzstd?.kind === "stream" ? decoders.unzstd.recycle : undefined;
    for await (const entry of readTar(tarInput, { release })) {
      yield { entry };
      if (entry.type !== "file") continue;
      let filled = 0;
      for await (let piece of entry.body()) {
        while (piece.byteLength > 0) {
          const n = Math.min(piece.byteLength, chunkSize - filled);
          buffer.set(piece.subarray(0, n), filled);
          filled += n;
          piece = piece.subarray(n);
          if (filled === chunkSize) {
            const full = buffer;
            buffer = take();
            filled = 0;
            yield named(full);
          }
        }
      }
      if (filled > 0 && opts.spare) {
        const last = buffer.subarray(0, filled);
        buffer = take();
        yield named(last);
      } else if (filled > 0) {
        yield named(buffer.slice(0, filled));
      }
    }
    for (;;) {
      const { done } = await decompressed.read();
      if (done) break;
    }
    finished = true;
  } finally {
    if (!finished) await decompressed.cancel().catch(() => {});
  }
}
