// Converts one layer, streaming: compressed bytes → (digest check) → decompress → tar → fixed-size
// chunks → sha256 (cutting: ./cut.ts) → codec → one data blob, plus the layer's bootstrap. The
// result depends only on the layer and the parameters (chunks are deduplicated inside the layer
// only), so a base layer shared by many images is converted once. Nothing is visible until the
// layer digest has matched: the data blob is committed first and the bootstrap, which is what
// readers look for, last.
//
// Where CPU time per invocation is limited (Workers), the conversion can go in steps: each stops at
// a chunk boundary once its budget is spent, leaving a checkpoint (./checkpoint.ts) and the data it
// wrote as a segment; the next replays the layer to that point and goes on; the last joins the
// segments into the data blob. The result is the same bytes as one pass. The data blob's digest is
// that of the chunk table (format/encode-table.ts), so neither path hashes the blob itself.
import { layerBootstrapKey, layerCheckpointKey, layerDataKey, layerSegmentKey } from "../store/keys.ts";
import { encodeTable, type LayerTables } from "../format/encode-table.ts";
import { Bootstrap } from "../format/decode.ts";
import { ChunkTable } from "../format/tree-table.ts";
import { fromHex, type HasherFactory } from "../hash/hasher.ts";
import type { Digest } from "../oci/reference.ts";
import { getBytes, putBytes, type ContentStore } from "../store/store.ts";
import { CheckpointError, decodeCheckpoint, encodeCheckpoint, type Checkpoint, type Segment } from "./checkpoint.ts";
import { codecId } from "../format/chunk-codec.ts";
import { inlineChunkEncoder, type ChunkEncoder, type EncodedChunk } from "./chunk-encoder.ts";
import { compressionForMediaType, LayerFormatError, type GunzipFactory, type UnzstdFactory } from "./decompress.ts";
import { cutLayer, type CutSink } from "./cut.ts";
import { LayerTree, SkippedEntries } from "./layer-tree.ts";
import { paramsId, type ConvertParams } from "../format/params.ts";
import { TarError } from "./tar.ts";
import { BatchedWriter } from "../util/streams.ts";

export interface LayerSource {
  digest: Digest;
  mediaType: string;
  /** Size from the manifest; checked when given. */
  size?: number;
  open(): Promise<ReadableStream<Uint8Array>>;
  /**
   * open() gives bytes already checked against the digest (the proxy's verified blob cache, which
   * errors its live stream at a mismatch): the converter does not hash them again.
   */
  checked?: boolean;
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
  skipped: SkippedEntries;
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

/** How much a step may still do: content bytes to chunk. Shared by the layers of one image job. */
export interface StepBudget {
  remaining: number;
}

/** The step's budget ran out: a checkpoint is stored, and converting again goes on from it. */
export class ConversionPaused extends Error {
  constructor(
    readonly layer: string,
    /** Chunks cut from the layer so far. */
    readonly chunks: number,
    /** Data blob bytes written so far. */
    readonly storedBytes: number,
  ) {
    super(`conversion of layer ${layer} paused after ${chunks} chunks`);
  }
}

export interface ConvertLayerOptions {
  store: ContentStore;
  hasher: HasherFactory;
  /** The runtime's gzip decoder, when faster than the built-in one (node:zlib). */
  gunzip?: GunzipFactory;
  /** The runtime's zstd decoder, when faster than the built-in one (node:zlib's, or WebAssembly). */
  unzstd?: UnzstdFactory;
  params: ConvertParams;
  /** Encodes the chunks (the runtime's, e.g. on worker threads); on this thread by default. */
  chunkEncoder?: ChunkEncoder;
  /** Called as compressed bytes are read (for progress). */
  onBytes?: (n: number) => void;
  /**
   * Convert in resumable steps: stop at the first chunk boundary after this budget is spent,
   * throwing ConversionPaused. Without it the layer is converted in one pass.
   */
  budget?: StepBudget;
  /** Called before anything is committed; throws to abandon the conversion (a lost lease). */
  guard?: () => Promise<void>;
  /** Refuse a layer whose uncompressed tar grows past this many bytes (default 64 GiB). */
  maxExpandedBytes?: number;
  /** Refuse a layer with more tar entries than this (default 1,000,000). */
  maxEntries?: number;
}

/**
 * gzip expands up to about 1,000 times, so a layer under any sensible size limit could still
 * expand to terabytes, and converting costs time in the expanded size (about 2.5 s per GiB on one
 * core, docs/reliability.md). Real layers expand a few times: 64 GiB leaves room for the largest.
 */
export const DEFAULT_MAX_EXPANDED_BYTES = 64 * 2 ** 30;

/**
 * The file tree is held in memory while a layer converts (src/format/tree-table.ts: about 260 bytes
 * per entry at the peak, bootstrap included: docs/benchmarks.md), and an empty file costs 512 bytes
 * of tar that gzip shrinks to about 7: a 7 MB layer of a million empty files takes 260 MB. The
 * largest real layers hold a few hundred thousand.
 */
export const DEFAULT_MAX_ENTRIES = 1_000_000;

/**
 * What converting holds per tar entry at its peak, when the bootstrap has just been encoded beside
 * the tree: 205 to 230 bytes measured on node_modules-like layers (bench:entry-memory), plus the
 * encoder's working arrays (about 28 bytes per inode).
 */
export const PEAK_BYTES_PER_ENTRY = 260;

/** What a conversion holds whatever the layer: chunks in flight, stream and upload buffers. */
export const CONVERSION_BASE_BYTES = 32 * 2 ** 20;

/** The most tar entries a conversion fits into `memoryBytes` (a Worker's 128 MB), in thousands. */
export function entryLimitForMemory(memoryBytes: number): number {
  return Math.max(1000, Math.floor((memoryBytes - CONVERSION_BASE_BYTES) / PEAK_BYTES_PER_ENTRY / 1000) * 1000);
}

/** Data blob bytes gathered into one store write. */
const WRITE_BATCH_BYTES = 2 ** 20;

/** Chunk bytes cut but not yet written, at most: the encoder's window is cut down for large chunks. */
const MAX_IN_FLIGHT_BYTES = 32 * 2 ** 20;

/** Returns the stored conversion of the layer, converting it first if there is none. */
export async function convertLayer(layer: LayerSource, opts: ConvertLayerOptions): Promise<ConvertedLayer> {
  const { store } = opts;
  const id = paramsId(opts.params);
  const bootstrapKey = layerBootstrapKey(layer.digest, id);
  const dataKey = layerDataKey(layer.digest, id);
  const checkpointKey = layerCheckpointKey(layer.digest, id);
  // Refused before anything is downloaded.
  if (compressionForMediaType(layer.mediaType) === null) throw new LayerFormatError(`unsupported layer media type ${JSON.stringify(layer.mediaType)}`);
  // The first step writes at the data key itself, so a layer done in one step is never copied.
  // The others are named by the chunk they begin at: two steps that raced from one checkpoint wrote
  // the same bytes under one name, or differ in size, which joining notices.
  const segmentKey = (fromChunk: number) => (fromChunk === 0 ? dataKey : layerSegmentKey(layer.digest, id, fromChunk));
  /** After the bootstrap is written: the segments but the first (the data blob), then the checkpoint that lists them. */
  const dropFinishedSteps = async (segments: Segment[]) => {
    for (const s of segments.slice(1)) await store.delete(segmentKey(s.from));
    await store.delete(checkpointKey);
  };
  const existing = await getBytes(store, bootstrapKey);
  if (existing) {
    // A process stopped between writing the bootstrap and clearing its steps away leaves them to the
    // next: those the checkpoint lists, and the last step's, which begins where the checkpoint ends.
    const left = opts.budget ? await loadCheckpoint(store, checkpointKey, layer.digest.value, id) : null;
    if (left) await dropFinishedSteps([...left.segments, { from: left.ordinals.length, size: 0 }]);
    return { bootstrap: Bootstrap.decode(existing), bootstrapKey, dataKey, converted: false };
  }

  const from = opts.budget ? await loadCheckpoint(store, checkpointKey, layer.digest.value, id) : null;
  const segment = { from: from?.ordinals.length ?? 0, size: 0 };
  const dropSteps = async () => {
    await store.delete(checkpointKey);
    for (const s of from?.segments ?? []) await store.delete(segmentKey(s.from));
  };
  const upload = await store.put(segmentKey(segment.from));
  // Most chunks are small files' only chunk: they reach the store in batches.
  const batched = new BatchedWriter((bytes) => upload.write(bytes), WRITE_BATCH_BYTES);
  let outcome: StreamOutcome | null;
  // The bootstrap, encoded while the data blob goes to disk.
  let encoded: Uint8Array | null = null;
  try {
    outcome = await streamLayer(layer, opts, from, (bytes, release) => {
      segment.size += bytes.byteLength;
      return batched.write(bytes, release);
    });
    await batched.flush();
    await opts.guard?.();
    const committed = upload.commit();
    try {
      if ("tables" in outcome) encoded = encodeTable(outcome.tables, opts.hasher);
    } finally {
      // Settled before anything can cancel the upload under its commit.
      await committed;
    }
  } catch (err) {
    await batched.settle();
    await upload.cancel();
    // A checkpoint that does not fit the layer, or steps over bytes that can never convert (not a
    // layer, or not the layer its digest names), are dropped with their segments: the next attempt
    // starts over, and a bad layer leaves nothing behind. Other failures (the upstream, the store)
    // keep the steps done so far for the next attempt.
    if (err instanceof CheckpointError || err instanceof LayerFormatError || err instanceof TarError || err instanceof LayerDigestError) await dropSteps();
    throw err;
  }

  const segments = [...(from?.segments ?? []), segment];
  if ("paused" in outcome) {
    const { chunks, ordinals } = outcome.paused;
    await putBytes(store, checkpointKey, encodeCheckpoint({ layer: layer.digest.value, params: id, chunks, ordinals, segments }));
    throw new ConversionPaused(layer.digest.value, ordinals.length, segments.reduce((sum, s) => sum + s.size, 0));
  }
  const { stats } = outcome;
  // The tables are garbage from here on: the bootstrap alone is kept.
  outcome = null;
  const bytes = encoded!;
  if (from) {
    await joinSegments(store, opts, dataKey, segments.map((s) => ({ key: segmentKey(s.from), size: s.size }))).catch(async (err: unknown) => {
      // Segments that don't add up can't be joined by trying again: start over.
      if (err instanceof CheckpointError) await dropSteps();
      throw err;
    });
  }
  await opts.guard?.();
  await putBytes(store, bootstrapKey, bytes);
  if (opts.budget) await dropFinishedSteps(segments);
  return { bootstrap: Bootstrap.decode(bytes), bootstrapKey, dataKey, converted: true, stats };
}

async function loadCheckpoint(store: ContentStore, key: string, layer: string, params: string): Promise<Checkpoint | null> {
  const bytes = await getBytes(store, key);
  if (!bytes) return null;
  try {
    const cp = decodeCheckpoint(bytes);
    if (cp.layer === layer && cp.params === params) return cp;
  } catch (err) {
    if (!(err instanceof CheckpointError)) throw err;
  }
  await store.delete(key);
  return null;
}

/** Writes the segments one after another as the data blob. */
async function joinSegments(store: ContentStore, opts: ConvertLayerOptions, dataKey: string, segments: { key: string; size: number }[]): Promise<void> {
  const upload = await store.put(dataKey);
  try {
    for (const { key, size } of segments) {
      // The first segment is the data key itself, which an earlier join may have replaced with the
      // whole blob before it was cut off (a process stopped before the bootstrap was written): the
      // blob begins with that segment, so its first `size` bytes are the segment all the same.
      const body = await store.get(key, key === dataKey ? { offset: 0, length: size } : undefined);
      if (!body) throw new CheckpointError(`conversion segment ${key} is missing`);
      const reader = body.getReader();
      let got = 0;
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        got += value.byteLength;
        if (got > size) {
          await reader.cancel();
          break;
        }
        await upload.write(value);
      }
      if (got !== size) throw new CheckpointError(`conversion segment ${key} has ${got > size ? "more" : got} bytes, not ${size}`);
    }
    await opts.guard?.();
    await upload.commit();
  } catch (err) {
    await upload.cancel();
    throw err;
  }
}

type StreamOutcome = { tables: LayerTables; stats: LayerStats } | { paused: { chunks: ChunkTable; ordinals: Uint32Array } };

/** Thrown inside the chunk loop when the step's budget is spent; never leaves streamLayer. */
class Pause {}

/**
 * `write` calls `release` once it is done with the bytes (BatchedWriter); it returns a promise only
 * when there is something to wait for. So does each step of a chunk below: most chunks of a layer
 * are small files' only chunk, and their promises were a sixth of the garbage of converting a
 * layer of 100,000 small files (docs/benchmarks.md, "Per-chunk costs").
 */
async function streamLayer(layer: LayerSource, opts: ConvertLayerOptions, from: Checkpoint | null, write: (bytes: Uint8Array, release: () => void) => Promise<void> | undefined): Promise<StreamOutcome> {
  const { hasher, params, budget } = opts;
  const chunkSize = 2 ** params.chunkShift;
  const stats: LayerStats = { entries: 0, files: 0, bytesIn: 0, bytesContent: 0, bytesStored: 0, chunks: 0, uniqueChunks: 0, bytesDeduplicated: 0, skipped: new SkippedEntries() };

  // The layer digest is computed over the compressed bytes exactly as they arrive, unless the source checks it.
  const layerHash = layer.checked ? null : hasher(layer.digest.algorithm);
  const source = await layer.open();
  const tapped = source.pipeThrough(
    new TransformStream<Uint8Array, Uint8Array>({
      transform(chunk, controller) {
        layerHash?.update(chunk);
        stats.bytesIn += chunk.byteLength;
        opts.onBytes?.(chunk.byteLength);
        controller.enqueue(chunk);
      },
    }),
  );

  // Chunk records in columns, found again by digest: an object and a hex string per chunk cost
  // more than the rest of an entry (tree-table.ts).
  const chunks = from?.chunks ?? new ChunkTable();
  const tree = new LayerTree();
  const table = tree.table;
  // Chunks up to the checkpoint are replayed: their records are known, only the tree is rebuilt.
  const replayed = from?.ordinals ?? new Uint32Array(0);
  // Every chunk's record index, kept only when the conversion may pause and need a checkpoint.
  const ordinals: number[] | null = budget ? Array.from(replayed) : null;
  let ordinal = 0;

  const replayChunk = (data: Uint8Array): number => {
    const index = replayed[ordinal++]!;
    if (chunks.size(index) !== data.byteLength) throw new CheckpointError(`chunk ${ordinal - 1} is ${data.byteLength} bytes in the layer, ${chunks.size(index)} in the checkpoint`);
    stats.chunks++;
    if (index === stats.uniqueChunks) {
      stats.uniqueChunks++;
      stats.bytesStored += chunks.storedSize(index);
    } else {
      stats.bytesDeduplicated += data.byteLength;
    }
    return index;
  };

  const encoder = opts.chunkEncoder ?? inlineChunkEncoder;
  // Chunks handed to the encoder and not yet written, oldest first. Each is written, and its record
  // index given to its file, in the order it was cut, so the blob and records are the same bytes
  // whatever the encoder and however many chunks it has in flight.
  // With codec none there is nothing to wait for: one chunk at a time, and fewer buffers.
  const inFlight = params.codec === "none" ? 1 : Math.max(1, Math.min(encoder.window, Math.floor(MAX_IN_FLIGHT_BYTES / chunkSize)));
  // A chunk's result is at hand when nothing encodes it (codec none).
  const pending: { data: Uint8Array; result: EncodedChunk | Promise<EncodedChunk>; hex: string; size: number; slot: number }[] = [];
  // Chunk buffers written and hashed, for the cutter to cut into again: as many as can be in
  // flight, and those the writer holds (one being written, one waiting).
  const spare: Uint8Array[] = [];
  const maxSpare = inFlight + 2;
  /** Gives `bytes`' buffer back to the cutter if it is one of its chunk buffers and still ours. */
  const giveBack = (bytes: Uint8Array): boolean => {
    const whole = bytes.buffer.byteLength === chunkSize && bytes.byteOffset === 0 && bytes.buffer instanceof ArrayBuffer;
    if (whole && spare.length < maxSpare) spare.push(bytes.byteLength === chunkSize ? bytes : new Uint8Array(bytes.buffer));
    return whole;
  };

  /** Writes the oldest chunk in flight, or finds it already in the layer, and gives its file the record index. */
  const settleOldest = (): Promise<void> | undefined => {
    const oldest = pending.shift()!;
    const { result } = oldest;
    return result instanceof Promise ? result.then((encoded) => settle(oldest, encoded)) : settle(oldest, result);
  };
  const settle = ({ data, hex, size, slot }: (typeof pending)[number], { stored, compressed }: EncodedChunk): Promise<void> | undefined => {
    const refer = (index: number) => {
      table.chunkRefs.set(slot, index);
      ordinals?.push(index);
    };
    // Once hashed and written (or copied by the writer), the cutter's buffer is cut into again. An
    // encoder on another thread took it (detached here) and sent it back holding `stored`.
    const release = () => void (giveBack(data) || giveBack(stored));
    const digest = fromHex(hex);
    const index = chunks.find(digest);
    if (index !== -1) {
      stats.bytesDeduplicated += size;
      release();
      refer(index);
      return undefined;
    }
    const add = () => {
      refer(chunks.add({ digest, compressed, storedOffset: chunks.storedEnd, storedSize: stored.byteLength, size, uncompressedOffset: chunks.uncompressedEnd }));
      stats.bytesStored += stored.byteLength;
      stats.uniqueChunks++;
    };
    const written = write(stored, release);
    if (written) return written.then(add);
    add();
    return undefined;
  };
  const drain = async (): Promise<void> => {
    while (pending.length > 0) await settleOldest();
  };

  /** Takes a chunk of the file inode `file`: the encoder takes `data` over. A promise when it must be waited for. */
  const addChunk = (data: Uint8Array, hex: string, file: number): Promise<void> | undefined => {
    if (ordinal < replayed.length) {
      table.chunkRefs.set(table.addChunkRef(file), replayChunk(data));
      // Only its size was needed: the buffer goes back to the cutter, or each replayed file would take a new one.
      giveBack(data);
      return;
    }
    ordinal++;
    stats.chunks++;
    // Read before the encoder takes `data` over: its buffer may move to another thread.
    const size = data.byteLength;
    const result = params.codec === "none" ? { stored: data, compressed: false } : encoder.encode(data, params.codec);
    // Awaited in order by settleOldest; one that fails while older ones are awaited must not go unhandled.
    if (result instanceof Promise) result.catch(() => {});
    pending.push({ data, result, hex, size, slot: table.addChunkRef(file) });
    const spend = () => {
      if (budget && (budget.remaining -= size) <= 0) throw new Pause();
    };
    const settled = pending.length >= inFlight ? settleOldest() : undefined;
    if (settled) return settled.then(spend);
    spend();
    return undefined;
  };

  const maxEntries = opts.maxEntries ?? DEFAULT_MAX_ENTRIES;
  // The inode of the file being cut; -1 while the entry is not a file the tree keeps.
  let file = -1;
  const sink: CutSink = {
    entry: (entry) => {
      if (tree.entries >= maxEntries) throw new LayerFormatError(`layer ${layer.digest.value} has more than ${maxEntries} entries, this converter's limit`);
      file = tree.add(entry);
      if (file === -1) return undefined;
      stats.files++;
      table.setSize(file, entry.size);
      stats.bytesContent += entry.size;
      return undefined;
    },
    // A chunk of a file the tree leaves out is dropped.
    chunk: (data, hex) => (file === -1 ? void giveBack(data) : addChunk(data, hex, file)),
  };
  try {
    // A pause or an error stops the cutter, which cancels the source.
    await cutLayer(tapped, { layer: layer.digest.value, mediaType: layer.mediaType, chunkSize, maxExpandedBytes: opts.maxExpandedBytes ?? DEFAULT_MAX_EXPANDED_BYTES, spare }, hasher, sink, { gunzip: opts.gunzip, unzstd: opts.unzstd });
  } catch (err) {
    if (!(err instanceof Pause)) throw err;
    await drain();
    return { paused: { chunks, ordinals: Uint32Array.from(ordinals!) } };
  }
  await drain();
  if (ordinal < replayed.length) throw new CheckpointError(`the layer has ${ordinal} chunks, the checkpoint ${replayed.length}`);

  if (layer.size !== undefined && stats.bytesIn !== layer.size) {
    throw new LayerDigestError(`layer ${layer.digest.value} is ${stats.bytesIn} bytes, its descriptor says ${layer.size}`);
  }
  if (layerHash && layerHash.hex() !== layer.digest.hex) throw new LayerDigestError(`layer bytes do not match digest ${layer.digest.value}`);

  stats.entries = tree.entries;
  stats.skipped = tree.skipped;
  // Nothing is looked up any more: the lookups' memory is room for the bootstrap.
  table.seal();
  chunks.seal();
  const tables: LayerTables = {
    codec: codecId(params.codec),
    chunkShift: params.chunkShift,
    blob: { storedSize: chunks.storedEnd, layerDigest: layer.digest.value },
    tree: table,
    chunks,
  };
  return { tables, stats };
}
