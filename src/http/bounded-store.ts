// A bounded store (src/store/bounded.ts) in the app: its usage in /metrics, and each eviction
// forgotten by the in-memory caches of what the store holds, so that the next request finds the
// object gone and fetches or converts it again rather than answering from memory.
import type { BlobCache } from "../cache/blobs.ts";
import type { LayerIndex } from "../lazy/layer-index.ts";
import { parseDigest } from "../oci/reference.ts";
import type { BoundedStore } from "../store/bounded.ts";
import { blobKeyDigest } from "../store/keys.ts";
import type { Metrics } from "../util/metrics.ts";

export function watchBoundedStore(store: BoundedStore, metrics: Metrics, caches: { blobs: BlobCache; layers: LayerIndex }): void {
  const usage = () => store.usage();
  metrics.observe("skiff_store_bytes", "gauge", "Bytes of the objects in the store, with writes in progress not yet counted.", () => usage().bytes);
  metrics.observe("skiff_store_objects", "gauge", "Objects in the store.", () => usage().objects);
  metrics.observe("skiff_store_max_bytes", "gauge", "The store's bound (--max-store-size).", () => usage().maxBytes);
  metrics.observe("skiff_store_evictions_total", "counter", "Units evicted from the store (a blob, a converted layer, an image bootstrap, a learned list).", () => usage().evictions);
  metrics.observe("skiff_store_evicted_bytes_total", "counter", "Bytes evicted from the store.", () => usage().evictedBytes);
  metrics.observe("skiff_store_refetches_total", "counter", "Evicted units stored again: blobs fetched again from the upstream, layers converted again.", () => usage().restored);
  store.watchEvictions((keys) => {
    for (const key of keys) {
      const digest = blobKeyDigest(key);
      const parsed = digest === null ? null : parseDigest(digest);
      if (parsed) caches.blobs.forget(parsed);
      else caches.layers.forget(key);
    }
  });
}
