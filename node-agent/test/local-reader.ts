// A FileReader over a `skiff convert` output directory, for the FUSE tests (mount-image.mjs): chunks
// come from the directory's store and are verified exactly as `skiff extract` verifies them. A test
// helper, so it may use src/cli; the agent's reader is the lazy one, which fetches from a proxy.
import { openConverted } from "../../src/cli/converted.ts";
import { readVerifiedChunk, storeReadStored, type ReadStored } from "../../src/cli/stored-chunks.ts";
import { codecFromId, type ChunkCodec } from "../../src/format/codec.ts";
import type { Bootstrap } from "../../src/format/decode.ts";
import type { FileReader } from "../src/file-reader.ts";
import { RecentChunks } from "../src/recent-chunks.ts";

// Per-file chunk offsets, kept for the files read most recently.
const CACHED_FILES = 64;

interface FileChunks {
  records: ReturnType<Bootstrap["chunks"]>;
  /** Offset in the file of each record's first byte. */
  starts: number[];
}

export class LocalReader implements FileReader {
  readonly #codec: ChunkCodec;
  readonly #files = new Map<number, FileChunks>();
  readonly #recent = new RecentChunks();

  constructor(
    readonly bootstrap: Bootstrap,
    readonly readStored: ReadStored,
  ) {
    const codec = codecFromId(bootstrap.codec);
    if (codec === null) throw new Error(`the bootstrap uses unknown chunk codec ${bootstrap.codec}`);
    this.#codec = codec;
  }

  /** Opens what `skiff convert` wrote into `dir`. */
  static async open(dir: string): Promise<LocalReader> {
    const { bootstrap, image, store } = await openConverted(dir, { requireDir: true });
    return new LocalReader(bootstrap, storeReadStored(dir, image!, store!));
  }

  async read(inode: number, offset: number, length: number): Promise<Uint8Array> {
    const ino = this.bootstrap.inode(inode);
    if (ino.type !== "file") throw new Error(`inode ${inode} is not a regular file`);
    if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || length < 0) {
      throw new RangeError(`bad read of inode ${inode}: offset ${offset}, length ${length}`);
    }
    const end = Math.min(ino.size, offset + length);
    if (offset >= end) return new Uint8Array(0);
    const { records, starts } = this.#fileChunks(inode);
    const out = new Uint8Array(end - offset);
    // The last chunk starting at or before `offset`, then forward until `end`.
    let k = upperBound(starts, offset) - 1;
    for (let at = offset; at < end; k++) {
      const record = records[k];
      const start = starts[k];
      if (record === undefined || start === undefined) throw new Error(`inode ${inode}: chunks end before byte ${at} of ${ino.size}`);
      const data = await this.#chunk(record, `inode ${inode}: chunk ${k}`);
      const from = at - start;
      const take = Math.min(end - at, data.byteLength - from);
      if (take <= 0) throw new Error(`inode ${inode}: chunk ${k} does not cover byte ${at}`);
      out.set(data.subarray(from, from + take), at - offset);
      at += take;
    }
    return out;
  }

  #fileChunks(inode: number): FileChunks {
    let file = this.#files.get(inode);
    if (file === undefined) {
      const records = this.bootstrap.chunks(inode);
      const starts: number[] = [];
      let at = 0;
      for (const r of records) {
        starts.push(at);
        at += r.size;
      }
      file = { records, starts };
      remember(this.#files, inode, file, CACHED_FILES);
    }
    return file;
  }

  async #chunk(record: FileChunks["records"][number], what: string): Promise<Uint8Array> {
    const key = Buffer.from(record.digest).toString("hex");
    // A failed read is not remembered: the next read tries again.
    return (await this.#recent.get(key, () => readVerifiedChunk(this.readStored, this.#codec, record, what)))!;
  }
}

/** Index of the first element greater than `value` in ascending `sorted`. */
function upperBound(sorted: number[], value: number): number {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (sorted[mid]! <= value) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Map insertion order as recency: re-inserts `key` and drops the oldest entries beyond `limit`. */
function remember<K, V>(map: Map<K, V>, key: K, value: V, limit: number): void {
  map.delete(key);
  map.set(key, value);
  for (const oldest of map.keys()) {
    if (map.size <= limit) break;
    map.delete(oldest);
  }
}
