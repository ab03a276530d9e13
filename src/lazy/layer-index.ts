// Finds a converted layer's chunks by digest, for the content-addressed chunk URLs. Decoded layer
// bootstraps are kept in a small LRU since chunk requests for one layer come in bursts.
import { layerBootstrapKey, layerDataKey } from "../store/keys.ts";
import { Bootstrap } from "../format/decode.ts";
import type { ChunkRecord } from "../format/model.ts";
import { toHex } from "../hash/hasher.ts";
import type { Digest } from "../oci/reference.ts";
import { getBytes, type ContentStore } from "../store/store.ts";

export interface ConvertedLayerIndex {
  bootstrap: Bootstrap;
  bootstrapKey: string;
  dataKey: string;
  /**
   * The data blob's strong validator: its data digest (docs/format.md), which names its bytes but
   * is not their sha256, so not spelled like the body digests other ETags of the API are.
   */
  dataETag: string;
  dataSize: number;
  chunk(hex: string): ChunkRecord | null;
}

export class LayerIndex {
  readonly #store: ContentStore;
  readonly #capacity: number;
  readonly #entries = new Map<string, ConvertedLayerIndex>();

  constructor(store: ContentStore, capacity = 32) {
    this.#store = store;
    this.#capacity = capacity;
  }

  /** The published conversion of a layer, or null when there is none (yet). */
  async get(layer: Digest, params: string): Promise<ConvertedLayerIndex | null> {
    const key = layerBootstrapKey(layer, params);
    const hit = this.#used(key);
    if (hit) return hit;
    const bytes = await getBytes(this.#store, key);
    if (!bytes) return null;
    const bootstrap = Bootstrap.decode(bytes);
    const blob = bootstrap.blob(0);
    const entry: ConvertedLayerIndex = {
      bootstrap,
      bootstrapKey: key,
      dataKey: layerDataKey(layer, params),
      dataETag: `"data:${toHex(blob.dataDigest)}"`,
      dataSize: blob.storedSize,
      chunk: (hex) => {
        const i = bootstrap.chunkIndexOf(hex);
        return i === null ? null : bootstrap.chunk(i);
      },
    };
    this.#entries.set(key, entry);
    if (this.#entries.size > this.#capacity) this.#entries.delete(this.#entries.keys().next().value!);
    return entry;
  }

  /** `get` from memory only, without reading the store: null when the layer is not decoded here. */
  remembered(layer: Digest, params: string): ConvertedLayerIndex | null {
    return this.#used(layerBootstrapKey(layer, params));
  }

  #used(key: string): ConvertedLayerIndex | null {
    const hit = this.#entries.get(key);
    if (!hit) return null;
    this.#entries.delete(key); // re-insert: most recently used last
    this.#entries.set(key, hit);
    return hit;
  }

  /** The store lost `key` (evicted): a layer bootstrap kept here is looked up afresh next time. */
  forget(key: string): void {
    this.#entries.delete(key);
  }
}
