// Converts one layer, streaming: compressed bytes → (digest check) → decompress → tar → fixed-size
// chunks → sha256 → codec → one data blob, plus the layer's bootstrap. The result depends only on
// the layer and the parameters (chunks are deduplicated inside the layer only), so a base layer
// shared by many images is converted once. Nothing is visible until the layer digest has matched:
// the data blob is committed first and the bootstrap, which is what readers look for, last.
import { layerBootstrapKey, layerDataKey } from "../cache/keys.ts";
import { encodeBootstrap } from "../format/encode.ts";
import { Bootstrap } from "../format/decode.ts";
import type { ChunkRecord } from "../format/model.ts";
import { fromHex, type HasherFactory } from "../hash/hasher.ts";
import type { Digest } from "../oci/reference.ts";
import { getBytes, putBytes, type ContentStore } from "../store/store.ts";
import { codecId, encodeChunk } from "./codec.ts";
import { compressionForMediaType, decompressLayer, LayerFormatError } from "./decompress.ts";
import { LayerTree, type SkippedEntry } from "./layer-tree.ts";
import { paramsId, type ConvertParams } from "./params.ts";
import { readTar } from "./tar.ts";

export interface LayerSource {
  digest: Digest;
  mediaType: string;
  /** Size from the manifest; checked when given. */
  size?: number;
  open(): Promise<ReadableStream<Uint8Array>>;
}

export interface LayerStats {
  entries: number;
  files: number;
  /** Compressed bytes read. */
  bytesIn: number;
  /** File content bytes (uncompressed). */
  bytesContent: number;
  /** Data blob bytes written. */
  bytesStored: number;
  chunks: number;
  uniqueChunks: number;
  /** Content bytes not stored again because an identical chunk was already in the layer. */
  bytesDeduplicated: number;
  skipped: SkippedEntry[];
}

export interface ConvertedLayer {
  bootstrap: Bootstrap;
  bootstrapKey: string;
  dataKey: string;
  /** False when the store already held this conversion. */
  converted: boolean;
  stats?: LayerStats;
}

export class LayerDigestError extends Error {}

export interface ConvertLayerOptions {
  store: ContentStore;
  hasher: HasherFactory;
  params: ConvertParams;
  /** Called as compressed bytes are read (for progress). */
  onBytes?: (n: number) => void;
}

/** Returns the stored conversion of the layer, converting it first if there is none. */
export async function convertLayer(layer: LayerSource, opts: ConvertLayerOptions): Promise<ConvertedLayer> {
  const id = paramsId(opts.params);
  const bootstrapKey = layerBootstrapKey(layer.digest, id);
  const dataKey = layerDataKey(layer.digest, id);
  // Refused before anything is downloaded.
  if (compressionForMediaType(layer.mediaType) === null) throw new LayerFormatError(`unsupported layer media type ${JSON.stringify(layer.mediaType)}`);
  const existing = await getBytes(opts.store, bootstrapKey);
  if (existing) return { bootstrap: Bootstrap.decode(existing), bootstrapKey, dataKey, converted: false };

  const upload = await opts.store.put(dataKey);
  try {
    const { model, stats } = await streamLayer(layer, opts, (bytes) => upload.write(bytes));
    await upload.commit();
    const bytes = encodeBootstrap(model);
    await putBytes(opts.store, bootstrapKey, bytes);
    return { bootstrap: Bootstrap.decode(bytes), bootstrapKey, dataKey, converted: true, stats };
  } catch (err) {
    await upload.cancel();
    throw err;
  }
}

async function streamLayer(layer: LayerSource, opts: ConvertLayerOptions, write: (bytes: Uint8Array) => Promise<void>) {
  const { hasher, params } = opts;
  const chunkSize = 2 ** params.chunkShift;
  const stats: LayerStats = { entries: 0, files: 0, bytesIn: 0, bytesContent: 0, bytesStored: 0, chunks: 0, uniqueChunks: 0, bytesDeduplicated: 0, skipped: [] };

  // The layer digest is computed over the compressed bytes exactly as they arrive.
  const layerHash = hasher(layer.digest.algorithm);
  const source = await layer.open();
  const tapped = source.pipeThrough(
    new TransformStream<Uint8Array, Uint8Array>({
      transform(chunk, controller) {
        layerHash.update(chunk);
        stats.bytesIn += chunk.byteLength;
        opts.onBytes?.(chunk.byteLength);
        controller.enqueue(chunk);
      },
    }),
  );
  const decompressed = decompressLayer(tapped, layer.mediaType).getReader();
  // The tar reader stops at the end-of-archive marker; whatever follows (padding, the gzip
  // trailer) must still be read so the digest covers every byte. So it gets a view it can't cancel.
  const tarInput = new ReadableStream<Uint8Array>({
    async pull(controller) {
      const { done, value } = await decompressed.read();
      if (done) controller.close();
      else controller.enqueue(value);
    },
  });

  const dataHash = hasher("sha256");
  const chunks: ChunkRecord[] = [];
  const known = new Map<string, number>();
  let storedOffset = 0;
  let uncompressedOffset = 0;
  const tree = new LayerTree();

  const addChunk = async (data: Uint8Array): Promise<number> => {
    stats.chunks++;
    const h = hasher("sha256");
    h.update(data);
    const hex = h.hex();
    const seen = known.get(hex);
    if (seen !== undefined) {
      stats.bytesDeduplicated += data.byteLength;
      return seen;
    }
    const encoded = params.codec === "none" ? data : encodeChunk(params.codec, data);
    // Incompressible chunks are stored as they are; the chunk record says which.
    const compressed = encoded.byteLength < data.byteLength;
    const stored = compressed ? encoded : data;
    await write(stored);
    dataHash.update(stored);
    const record: ChunkRecord = { digest: fromHex(hex), blob: 0, compressed, storedOffset, storedSize: stored.byteLength, size: data.byteLength, uncompressedOffset };
    storedOffset += stored.byteLength;
    uncompressedOffset += data.byteLength;
    stats.bytesStored += stored.byteLength;
    stats.uniqueChunks++;
    chunks.push(record);
    known.set(hex, chunks.length - 1);
    return chunks.length - 1;
  };

  const buffer = new Uint8Array(chunkSize);
  for await (const entry of readTar(tarInput)) {
    const node = tree.add(entry);
    if (!node) continue;
    stats.files++;
    let filled = 0;
    for await (let piece of entry.body()) {
      while (piece.byteLength > 0) {
        const take = Math.min(piece.byteLength, chunkSize - filled);
        buffer.set(piece.subarray(0, take), filled);
        filled += take;
        piece = piece.subarray(take);
        if (filled === chunkSize) {
          node.chunks.push(await addChunk(buffer));
          filled = 0;
        }
      }
    }
    if (filled > 0) node.chunks.push(await addChunk(buffer.subarray(0, filled)));
    node.size = entry.size;
    stats.bytesContent += entry.size;
  }
  for (;;) {
    const { done } = await decompressed.read();
    if (done) break;
  }

  if (layer.size !== undefined && stats.bytesIn !== layer.size) {
    throw new LayerDigestError(`layer ${layer.digest.value} is ${stats.bytesIn} bytes, its descriptor says ${layer.size}`);
  }
  if (layerHash.hex() !== layer.digest.hex) throw new LayerDigestError(`layer bytes do not match digest ${layer.digest.value}`);

  stats.entries = tree.entries;
  stats.skipped = tree.skipped;
  const model = {
    kind: "layer" as const,
    codec: codecId(params.codec),
    chunkShift: params.chunkShift,
    platform: "",
    blobs: [{ dataDigest: fromHex(dataHash.hex()), storedSize: storedOffset, layerDigest: layer.digest.value }],
    chunks,
    root: tree.root,
  };
  return { model, stats };
}
