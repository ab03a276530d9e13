// A bounded store (src/store/bounded.ts) in the app: its usage in /metrics; each eviction forgotten
// by the in-memory caches of what the store holds, so that the next request finds the object gone
// and fetches or converts it again rather than answering from memory; and the configs of cached
// images kept, as their manifests are.
import type { BlobCache } from "../cache/blobs.ts";
import type { LayerIndex } from "../lazy/layer-index.ts";
import { parseDigest } from "../oci/reference.ts";
import type { BoundedStore } from "../store/bounded.ts";
import { blobKey, blobKeyDigest } from "../store/keys.ts";
import { getBytes } from "../store/store.ts";
import type { Metrics } from "../util/metrics.ts";

export function watchBoundedStore(store: BoundedStore, metrics: Metrics, caches: { blobs: BlobCache; layers: LayerIndex }, log?: (message: string) => void): void {
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

  // The configs of the manifests stored before this start; those fetched from now on are kept by
  // keepConfigOf as they are stored.
  void (async () => {
    for await (const { key } of store.list("manifests/")) {
      if (key.endsWith(".meta")) continue;
      const bytes = await getBytes(store, key, MANIFEST_LIMIT);
      if (bytes) keepConfigOf(store, bytes);
    }
  })().catch((err: unknown) => log?.(`store: could not list the cached manifests' configs: ${(err as Error).message}`));
}

const MANIFEST_LIMIT = 4 * 2 ** 20;

/** Keeps the config a manifest names (an index names none) in the store for as long as the manifest. */
export function keepConfigOf(store: BoundedStore, manifest: Uint8Array): void {
  let digest: unknown;
  try {
    digest = (JSON.parse(new TextDecoder().decode(manifest)) as { config?: { digest?: unknown } }).config?.digest;
  } catch {
    return; // not JSON: nothing it names
  }
  const config = typeof digest === "string" ? parseDigest(digest) : null;
  if (config) store.keep(blobKey(config));
}
