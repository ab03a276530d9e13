// Manifests: by digest they are immutable and cached forever once verified; by tag the answer is
// cached per (repository, tag, Accept) and revalidated with the upstream after a TTL. A stale answer
// is served only when the upstream is unreachable, failing (5xx) or rate limited, never over a 401 or 404.
// A full store only stops caching: the manifest in hand is verified and served all the same.
import { hashBytes, type HasherFactory } from "../hash/hasher.ts";
import { OciError } from "../oci/errors.ts";
import type { Metrics } from "../util/metrics.ts";
import { parseDigest, type Digest } from "../oci/reference.ts";
import { UpstreamUnreachable } from "../oci/upstream.ts";
import type { RegistryClient } from "../oci/upstreams.ts";
import { getBytes, getJson, putBytes, putJson, StoreFullError, type ContentStore } from "../store/store.ts";
import { readAll } from "../util/streams.ts";
import { manifestKey, manifestLinkKey, manifestMetaKey, tagKey } from "../store/keys.ts";
import { upstreamError } from "../oci/upstream-errors.ts";

// Distribution refuses manifests above 4 MiB; so do we, before reading more.
export const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;

/** Media types asked for when the client's Accept does not decide the answer (by-digest fetches). */
export const MANIFEST_MEDIA_TYPES = [
  "application/vnd.oci.image.index.v1+json",
  "application/vnd.oci.image.manifest.v1+json",
  "application/vnd.docker.distribution.manifest.list.v2+json",
  "application/vnd.docker.distribution.manifest.v2+json",
];

export interface Manifest {
  digest: Digest;
  mediaType: string;
  size: number;
  /** Absent for HEAD answers taken from the upstream's headers alone. */
  bytes?: Uint8Array<ArrayBuffer>;
  /** True when served from cache because the upstream was unreachable or failing. */
  stale?: boolean;
  hit: boolean;
}

interface ManifestMeta {
  mediaType: string;
  size: number;
}

interface TagRecord {
  digest: string;
  mediaType: string;
  size: number;
  checkedAt: number;
}

export interface ManifestCacheDeps {
  store: ContentStore;
  upstream: RegistryClient;
  hasher: HasherFactory;
  metrics: Metrics;
  /** How long a tag answer of a repository is served without asking the upstream again. */
  tagTtlMs: (repository: string) => number;
  /** Called with each manifest fetched and stored (a bounded store keeps the config it names). */
  onStored?: (bytes: Uint8Array) => void;
  now?: () => number;
  log?: (message: string) => void;
}

export class ManifestCache {
  readonly #deps: ManifestCacheDeps;
  readonly #now: () => number;

  constructor(deps: ManifestCacheDeps) {
    this.#deps = deps;
    this.#now = deps.now ?? Date.now;
  }

  async byDigest(name: string, digest: Digest, accept: string | null): Promise<Manifest> {
    const stored = await this.#stored(digest);
    if (stored) {
      if (!(await this.#deps.store.stat(manifestLinkKey(name, digest)))) {
        // Cached through another repository: only shown here once the upstream confirms it.
        const res = await this.#deps.upstream.request(name, `manifests/${digest.value}`, { method: "HEAD", headers: { Accept: acceptAll(accept) } });
        if (!res.ok) throw await upstreamError(res, "manifest", `manifest ${digest.value} in ${name}`);
        await res.body?.cancel();
        await this.#link(name, digest);
      }
      return { ...stored, hit: true };
    }
    const res = await this.#deps.upstream.request(name, `manifests/${digest.value}`, { headers: { Accept: acceptAll(accept) } });
    return this.#store(name, `manifest ${digest.value} in ${name}`, res, digest);
  }

  async byTag(name: string, tag: string, accept: string | null, head: boolean): Promise<Manifest> {
    const key = tagKey(name, tag, await acceptKey(accept, this.#deps.hasher));
    const what = `manifest ${name}:${tag}`;
    const record = await getJson<TagRecord>(this.#deps.store, key);
    const recordDigest = record ? parseDigest(record.digest) : null;
    const cached = recordDigest ? await this.#stored(recordDigest) : null;
    if (record && cached && this.#now() - record.checkedAt < this.#deps.tagTtlMs(name)) return { ...cached, hit: true };

    const headers: Record<string, string> = accept ? { Accept: accept } : {};
    try {
      // Revalidate with a HEAD first: it is cheap and, on Docker Hub, not counted against pull limits.
      if (record || head) {
        const res = await this.#deps.upstream.request(name, `manifests/${tag}`, { method: "HEAD", headers });
        if (res.status >= 500) throw await upstreamError(res, "manifest", what);
        if (!res.ok && res.status !== 405) {
          // A rate limit says nothing about the tag: keep the record so it can still be served stale.
          if (res.status !== 429) await this.#deps.store.delete(key);
          throw await upstreamError(res, "manifest", what);
        }
        await res.body?.cancel();
        const digest = res.ok ? parseDigest(res.headers.get("docker-content-digest") ?? "") : null;
        const mediaType = res.headers.get("content-type");
        const size = Number(res.headers.get("content-length"));
        if (digest && mediaType) {
          const known = await this.#stored(digest);
          if (known) {
            await this.#link(name, digest);
            await this.#record(key, { ...known, digest });
            return { ...known, hit: false };
          }
          if (head && Number.isSafeInteger(size) && size > 0) {
            await this.#record(key, { digest, mediaType, size });
            return { digest, mediaType, size, hit: false };
          }
        }
      }
      const res = await this.#deps.upstream.request(name, `manifests/${tag}`, { headers });
      if (res.status >= 500) throw await upstreamError(res, "manifest", what);
      if (!res.ok && res.status !== 429) await this.#deps.store.delete(key);
      return await this.#store(name, what, res, null, key);
    } catch (err) {
      // An outage or a rate limit is no news about the tag: the last answer is better than none.
      const failing = err instanceof UpstreamUnreachable || (err instanceof OciError && (err.code === "UNAVAILABLE" || err.code === "TOOMANYREQUESTS"));
      if (failing && cached) {
        this.#deps.metrics.inc("skiff_stale_served_total");
        return { ...cached, stale: true, hit: true };
      }
      if (err instanceof UpstreamUnreachable) throw new OciError("UNAVAILABLE", `${err.message}; no cached copy of ${what}`);
      throw err;
    }
  }

  /**
   * Verifies an upstream manifest response against `expected` (or its Docker-Content-Digest) and
   * stores it, with the record of tag `tagKey` when given.
   */
  async #store(name: string, what: string, res: Response, expected: Digest | null, tagKey?: string): Promise<Manifest> {
    if (!res.ok || !res.body) throw await upstreamError(res, "manifest", what);
    const mediaType = (res.headers.get("content-type") ?? "").split(";")[0]!.trim();
    if (!mediaType) throw new OciError("UNAVAILABLE", `upstream sent ${what} without a Content-Type`);
    let bytes: Uint8Array<ArrayBuffer>;
    try {
      bytes = await readAll(res.body, MAX_MANIFEST_BYTES);
    } catch (err) {
      throw new OciError("UNAVAILABLE", `could not read ${what} from upstream: ${(err as Error).message}`);
    }
    this.#deps.metrics.inc("skiff_upstream_bytes_total", {}, bytes.byteLength);
    const announced = parseDigest(res.headers.get("docker-content-digest") ?? "");
    const algorithm = expected?.algorithm ?? announced?.algorithm ?? "sha256";
    const hex = hashBytes(this.#deps.hasher, algorithm, bytes);
    const digest = parseDigest(`${algorithm}:${hex}`)!;
    if ((expected && expected.hex !== hex) || (announced && announced.algorithm === algorithm && announced.hex !== hex)) {
      this.#deps.metrics.inc("skiff_verification_failures_total", { kind: "manifest" });
      throw new OciError("UNAVAILABLE", `upstream ${what} does not match its digest`);
    }
    const meta: ManifestMeta = { mediaType, size: bytes.byteLength };
    // All at once: each is a write and an fsync. A manifest is found only with its metadata, and a
    // tag or a link only leads to a manifest that is found (#stored), so no order is needed.
    await Promise.all([
      this.#keep(() => putJson(this.#deps.store, manifestMetaKey(digest), meta)),
      this.#keep(() => putBytes(this.#deps.store, manifestKey(digest), bytes)),
      this.#link(name, digest),
      tagKey && this.#record(tagKey, { digest, ...meta }),
    ]);
    this.#deps.onStored?.(bytes);
    return { digest, ...meta, bytes, hit: false };
  }

  async #stored(digest: Digest): Promise<Omit<Manifest, "hit"> | null> {
    const bytes = await getBytes(this.#deps.store, manifestKey(digest), MAX_MANIFEST_BYTES);
    if (!bytes) return null;
    const meta = await getJson<ManifestMeta>(this.#deps.store, manifestMetaKey(digest));
    if (!meta || meta.size !== bytes.byteLength) return null;
    return { digest, mediaType: meta.mediaType, size: meta.size, bytes };
  }

  #record(key: string, m: { digest: Digest; mediaType: string; size: number }): Promise<void> {
    const record: TagRecord = { digest: m.digest.value, mediaType: m.mediaType, size: m.size, checkedAt: this.#now() };
    return this.#keep(() => putJson(this.#deps.store, key, record));
  }

  #link(name: string, digest: Digest): Promise<void> {
    return this.#keep(async () => {
      const upload = await this.#deps.store.put(manifestLinkKey(name, digest));
      await upload.commit();
    });
  }

  /** Stores something worth keeping; a full store is logged and the answer goes out uncached. */
  async #keep(write: () => Promise<void>): Promise<void> {
    try {
      await write();
    } catch (err) {
      if (!(err instanceof StoreFullError)) throw err;
      this.#deps.log?.(`manifest not cached: ${err.message}`);
    }
  }
}

/** The client's Accept plus every manifest type, for answers that do not depend on negotiation. */
function acceptAll(accept: string | null): string {
  return [...new Set([...(accept ? accept.split(",").map((s) => s.trim()).filter(Boolean) : []), ...MANIFEST_MEDIA_TYPES])].join(", ");
}

/** A short stable key for the set of media types a client accepts (order and parameters ignored). */
export async function acceptKey(accept: string | null, hasher: HasherFactory): Promise<string> {
  if (!accept) return "any";
  const types = [...new Set(accept.split(",").map((t) => t.split(";")[0]!.trim().toLowerCase()).filter(Boolean))].sort();
  if (types.length === 0) return "any";
  return hashBytes(hasher, "sha256", new TextEncoder().encode(types.join(","))).slice(0, 16);
}
