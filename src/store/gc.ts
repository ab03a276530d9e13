// Garbage collection: what nothing can use any more, found from the keys alone (./keys.ts layout).
//   - a converted layer's data or steps without its bootstrap, when no conversion is under way:
//     left by a crash between committing the data and the bootstrap, or by a conversion in steps
//     that nobody went on with (its checkpoint older than STALE_STEPS_MS);
//   - a converted layer's bootstrap without its data (a bootstrap is published after its data, so
//     only a lost data object leaves one), and the steps of a conversion already published;
//   - a manifest's `.meta` record without the manifest;
//   - the checkpoint and lease of a blob fetch in steps (Workers) that nobody went on with for
//     STALE_STEPS_MS (R2 itself expires the upload's parts after 7 days), or whose blob is stored.
// Everything else is in use or may be: a converted layer whose source blob was evicted still serves
// its data, and repository links are the record of what each repository may see.
// A running proxy sweeps with a grace period, so that a conversion between two commits is never
// mistaken for a crashed one; at start and in `skiff gc` (a stopped proxy) there is none.
import type { ContentStore, ListedObject } from "./store.ts";

export interface Garbage {
  key: string;
  size: number;
  why: string;
}

export interface SweepOptions {
  /** Only report: delete nothing. */
  dryRun?: boolean;
  /** Leave objects written less than this long ago (a running proxy's sweep). */
  graceMs?: number;
  now?: () => number;
  /** The store's objects, when the caller has listed them already: the sweep lists none itself. */
  listed?: Iterable<ListedObject>;
}

/** Conversion steps untouched this long are abandoned: the next request starts that layer afresh. */
export const STALE_STEPS_MS = 24 * 3600_000;

const LAYER_OBJECT = /^(converted\/layers\/[^/]+\/[^/]+\/[^/]+\/[^/]+)\/(data|bootstrap|steps\/.+)$/;
const MANIFEST_META = /^(manifests\/.+)\.meta$/;
const BLOB_FETCH = /^fetches\/([^/]+)\/([0-9a-f]{2})\/([0-9a-f]+)\/(checkpoint|lease)$/;

/** Finds the garbage in `store` and, unless `dryRun`, deletes it; what it found. */
export async function sweepGarbage(store: ContentStore, o: SweepOptions = {}): Promise<Garbage[]> {
  if (!store.list) throw new Error("garbage collection needs a store that can list its objects");
  const now = (o.now ?? Date.now)();
  const layers = new Map<string, Map<string, ListedObject>>();
  const manifests = new Set<string>();
  const metas: ListedObject[] = [];
  const blobs = new Set<string>();
  const fetches: { object: ListedObject; blob: string }[] = [];
  for await (const object of o.listed ?? store.list()) {
    const layer = LAYER_OBJECT.exec(object.key);
    const fetch = BLOB_FETCH.exec(object.key);
    if (fetch) {
      fetches.push({ object, blob: `blobs/${fetch[1]}/${fetch[2]}/${fetch[3]}` });
    } else if (object.key.startsWith("blobs/")) {
      blobs.add(object.key);
    } else if (layer) {
      const parts = layers.get(layer[1]!) ?? new Map<string, ListedObject>();
      parts.set(layer[2]!, object);
      layers.set(layer[1]!, parts);
    } else if (MANIFEST_META.test(object.key)) {
      metas.push(object);
    } else if (object.key.startsWith("manifests/")) {
      manifests.add(object.key);
    }
  }

  const garbage: Garbage[] = [];
  const found = (object: ListedObject, why: string) => {
    if (now - object.modifiedMs >= (o.graceMs ?? 0)) garbage.push({ key: object.key, size: object.size, why });
  };
  for (const parts of layers.values()) {
    const bootstrap = parts.get("bootstrap");
    const data = parts.get("data");
    const steps = [...parts].filter(([part]) => part.startsWith("steps/")).map(([, object]) => object);
    if (bootstrap && data) {
      for (const step of steps) found(step, "steps of a conversion already published");
      continue;
    }
    if (bootstrap) {
      found(bootstrap, "a converted layer's bootstrap without its data");
      continue;
    }
    // Unpublished: a conversion in steps is under way while its checkpoint is fresh.
    const checkpoint = parts.get("steps/checkpoint");
    if (checkpoint && now - checkpoint.modifiedMs < STALE_STEPS_MS) continue;
    const why = checkpoint ? "an abandoned conversion in steps" : "an unpublished conversion (a crash before its bootstrap)";
    for (const object of [...(data ? [data] : []), ...steps]) found(object, why);
  }
  for (const { object, blob } of fetches) {
    if (blobs.has(blob)) found(object, "the record of a blob fetch already published");
    else if (now - object.modifiedMs >= STALE_STEPS_MS) found(object, "an abandoned blob fetch in steps");
  }
  for (const meta of metas) if (!manifests.has(MANIFEST_META.exec(meta.key)![1]!)) found(meta, "a manifest record without its manifest");

  if (!o.dryRun) for (const { key } of garbage) await store.delete(key);
  return garbage;
}

/** One line for a log: how much a sweep removed. */
export function garbageSummary(garbage: Garbage[]): string {
  return `removed ${garbage.length} objects nothing uses (${garbage.reduce((n, g) => n + g.size, 0)} bytes)`;
}
