// What becomes of one chunk cut from a layer (./cut.ts names it): the bytes stored for it. Behind an
// interface so a runtime can do this work off the thread that writes the layer (Node's worker
// threads: src/runtime/node-chunk-encoder.ts), which on a cold edge is most of a deflate-raw
// conversion's CPU. Whatever does it must give the same bytes as `encodeStored` here: converted
// blobs are content-addressed.
import type { ChunkCodec } from "../format/chunk-codec.ts";

export interface EncodedChunk {
  /** The bytes to store: the encoded chunk, or the chunk itself when encoding did not make it smaller. */
  stored: Uint8Array;
  /** Whether `stored` is encoded (the chunk record's flag). */
  compressed: boolean;
}

export interface ChunkEncoder {
  /** How many chunks the converter may have in flight at once; 1 encodes each before cutting the next. */
  readonly window: number;
  /** Encodes `data`, which it takes over with the whole buffer it views: the caller must not touch that buffer afterwards. */
  encode(data: Uint8Array, codec: ChunkCodec): Promise<EncodedChunk>;
}

/**
 * The stored form of a chunk: incompressible chunks are stored as they are. The encoder (fflate) is
 * loaded by the first chunk that needs it: a conversion to `none` never does.
 */
export async function encodeStored(codec: ChunkCodec, data: Uint8Array): Promise<EncodedChunk> {
  if (codec === "none") return { stored: data, compressed: false };
  const encoded = (await import("../format/codec.ts")).encodeChunk(codec, data);
  const compressed = encoded.byteLength < data.byteLength;
  return { stored: compressed ? encoded : data, compressed };
}

/** Encodes on the calling thread, one chunk at a time: every runtime's default. */
export const inlineChunkEncoder: ChunkEncoder = {
  window: 1,
  encode: (data, codec) => encodeStored(codec, data),
};
