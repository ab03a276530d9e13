// Reading chunks back out of a `skiff convert` output directory, each one checked against the sha256
// the bootstrap records before anyone gets its bytes. Shared by `skiff extract` (materialize) and the
// FUSE tests' LocalReader (node-agent/test), so both trust exactly the same bytes.
import { createHash } from "node:crypto";
import { decodeChunk, type ChunkCodec } from "../format/codec.ts";
import type { ChunkRecord } from "../format/model.ts";
import { toHex } from "../hash/hasher.ts";
import type { FsStore } from "../store/fs.ts";
import { readAll } from "../util/streams.ts";
import type { ImageJson } from "./image-json.ts";

/** Reads `size` stored bytes at `offset` of blob `blob` (an index into the bootstrap's blob table). */
export type ReadStored = (blob: number, offset: number, size: number) => Promise<Uint8Array>;

/** A chunk whose bytes are not what the bootstrap says: the data is corrupt or was tampered with. */
export class ChunkMismatchError extends Error {}

/**
 * The uncompressed bytes of one chunk, verified against its record. `what` names the chunk in
 * errors (e.g. `/etc/passwd: chunk 3`).
 */
export async function readVerifiedChunk(readStored: ReadStored, codec: ChunkCodec, record: ChunkRecord, what: string): Promise<Uint8Array> {
  const stored = await readStored(record.blob, record.storedOffset, record.storedSize);
  if (stored.byteLength !== record.storedSize) throw new ChunkMismatchError(`${what} is truncated in its data blob`);
  let data: Uint8Array;
  if (record.compressed) {
    try {
      data = await decodeChunk(codec, stored, record.size);
    } catch (err) {
      throw new ChunkMismatchError(`${what} (sha256:${toHex(record.digest)}) does not decode: ${(err as Error).message}`);
    }
  } else data = stored;
  const digest = createHash("sha256").update(data).digest();
  if (data.byteLength !== record.size || !digest.equals(record.digest)) {
    throw new ChunkMismatchError(`${what} does not match its digest sha256:${toHex(record.digest)}`);
  }
  return data;
}

/** Stored bytes from the data blobs of a convert output directory (`dir` only names it in errors). */
export function storeReadStored(dir: string, image: ImageJson, store: FsStore): ReadStored {
  return async (blob, offset, size) => {
    const key = image.layers[blob]?.data;
    if (key === undefined) throw new Error(`${dir} has no layer ${blob}`);
    const stream = await store.get(key, { offset, length: size });
    if (!stream) throw new Error(`${dir} has no data blob ${key}`);
    return readAll(stream, size);
  };
}
