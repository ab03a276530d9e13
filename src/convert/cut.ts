// Cutting a layer: compressed bytes → decompress → tar → every regular file's content in chunks of
// `chunkSize` bytes (a file's last one shorter), each named by its sha256. This is the part of a
// conversion whose cost grows with the layer's expanded size; what is left for the converter
// (./layer.ts) is the tree, deduplication, encoding and writing.
import { hashBytes, type HasherFactory } from "../hash/hasher.ts";
import { decompressLayer, LayerFormatError, type LayerDecoders } from "./decompress.ts";
import { TarParser, type TarEntry } from "./tar.ts";

/**
 * Where the cutter hands what it cuts. A regular file's chunks follow its entry, in order, before
 * the next entry; other entries have none. Chunks are cut from every regular file: the sink ignores
 * those of an entry it leaves out. A call that returns a promise is waited for before cutting on.
 */
export interface CutSink {
  entry(entry: TarEntry): Promise<void> | undefined;
  /** The next chunk, named by its sha256 in hex; the sink owns its buffer. */
  chunk(bytes: Uint8Array, hex: string): Promise<void> | undefined;
}

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
 * Cuts the layer read from `compressed` into `sink`; `decoders` are the runtime's, if any. Settles
 * once the whole layer is read, its decompressor's trailer included: the caller checks the
 * compressed bytes (digest, size). An error, the sink's too, cancels `compressed`.
 *
 * Each decompressed piece is parsed and cut synchronously, up to where the sink asks to wait: a
 * layer of small files is mostly headers and one-chunk files, which were each a few async-generator
 * steps before (docs/benchmarks.md, "Per-entry costs").
 */
export async function cutLayer(compressed: ReadableStream<Uint8Array>, opts: CutOptions, hasher: HasherFactory, sink: CutSink, decoders?: LayerDecoders): Promise<void> {
  const { chunkSize, maxExpandedBytes } = opts;
  // A full chunk is handed on in its own buffer and a new one is taken. So is a file's last,
  // partial chunk when the consumer gives buffers back; without a pool it is copied out, so that
  // small files don't each hold a whole chunk's buffer.
  const take = () => opts.spare?.pop() ?? new Uint8Array(chunkSize);
  let buffer = take();
  let filled = 0;
  /** Bytes of the current file not yet cut. */
  let fileLeft = 0;
  const named = (bytes: Uint8Array) => sink.chunk(bytes, hashBytes(hasher, "sha256", bytes));
  const body = (bytes: Uint8Array): Promise<void> | undefined => {
    for (let at = 0; at < bytes.byteLength; ) {
      const n = Math.min(bytes.byteLength - at, chunkSize - filled);
      buffer.set(n === bytes.byteLength ? bytes : bytes.subarray(at, at + n), filled);
      at += n;
      filled += n;
      fileLeft -= n;
      if (filled === chunkSize) {
        const full = buffer;
        buffer = take();
        filled = 0;
        const waiting = named(full);
        // The parser keeps `bytes` as they are until what is returned settles.
        if (waiting) return at < bytes.byteLength ? waiting.then(() => body(bytes.subarray(at))) : waiting;
      }
    }
    if (fileLeft > 0 || filled === 0) return undefined;
    const last = opts.spare ? buffer.subarray(0, filled) : buffer.slice(0, filled);
    if (opts.spare) buffer = take();
    filled = 0;
    return named(last);
  };
  const parser = new TarParser({
    entry: (entry) => {
      fileLeft = entry.type === "file" ? entry.size : 0;
      return sink.entry(entry);
    },
    body,
  });

  const decompressed = decompressLayer(compressed, opts.mediaType, decoders).getReader();
  // Pieces the parser is done with, for the decoder to write over: every body piece is copied
  // into chunk buffers before the parser settles.
  const release = decoders?.unzstd?.kind === "stream" ? decoders.unzstd.recycle : undefined;
  let expanded = 0;
  let finished = false;
  try {
    for (;;) {
      const { done, value } = await decompressed.read();
      if (done) break;
      expanded += value.byteLength;
      // Converting costs time in the expanded size: a decompression bomb stops here, not at its end.
      if (expanded > maxExpandedBytes) throw new LayerFormatError(`layer ${opts.layer} expands past ${maxExpandedBytes} bytes, this converter's limit`);
      // What follows the end marker (padding, more zero blocks) is read all the same, so the
      // decompressor checks its trailer and the digest covers every byte.
      if (!parser.finished) await parser.push(value);
      release?.(value);
    }
    parser.end();
    finished = true;
  } finally {
    if (!finished) await decompressed.cancel().catch(() => {});
  }
}
