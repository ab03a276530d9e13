// The verified blob cache. A miss is fetched from the upstream once per (repository, digest) however
// many clients ask, hashed while it streams into the store, and published only when the bytes match
// the digest. The first client is served live with the final bytes held back until that check
// passes; on a mismatch its response is aborted so it sees an error, never a clean end. When the
// store can't take the blob (a full disk), that client is still served, verified, and nothing is kept.
// Where one invocation can't pull a large blob (Workers), a fetch that no client streams is made in
// steps across requests instead (./blob-steps.ts): each request that wants the blob advances it.
import type { HasherFactory } from "../hash/hasher.ts";
import { OciError } from "../oci/errors.ts";
import type { Metrics } from "../util/metrics.ts";
import type { Digest } from "../oci/reference.ts";
import type { RegistryClient } from "../oci/upstreams.ts";
import { StoreFullError, type ContentStore, type ResumableUploads, type Upload } from "../store/store.ts";
import { blobKey, blobLinkKey } from "../store/keys.ts";
import { upstreamError } from "../oci/upstream-errors.ts";
import { BatchedWriter, coalesce } from "../util/streams.ts";
import { BlobSteps } from "./blob-steps.ts";

export interface BlobInfo {
  size: number;
}

export interface BlobFetch {
  /** Size announced by the upstream, when it sent Content-Length. */
  size: number | null;
  /** Live body for the client that started the fetch; null for clients that joined it. */
  live: ReadableStream<Uint8Array> | null;
  /** Resolves with the size once the verified blob is published; rejects when nothing was. */
  done: Promise<number>;
}

export interface BlobCacheDeps {
  store: ContentStore;
  upstream: RegistryClient;
  hasher: HasherFactory;
  metrics: Metrics;
  /**
   * Fetch blobs larger than this in steps of about this many bytes, one step per request, when the
   * store has resumable uploads (R2); whole in one pass otherwise.
   */
  stepBytes?: number;
  log?: (message: string) => void;
  now?: () => number;
}

/**
 * How a fetch's caller takes the blob: streamed as it arrives (`true`); only once stored (`false`);
 * or streamed when the blob is fetched in one pass and only once stored when in steps (`"if-one-pass"`).
 */
export type FetchMode = boolean | "if-one-pass";

// Chunks queued for a slow live client before the fetch waits for it; bounds memory per fetch.
const LIVE_QUEUE_CHUNKS = 16;
// Upstream bodies are handled in pieces of at least this size (see coalesce).
const COALESCE_BYTES = 64 * 1024;
/** Blob bytes gathered into one store write. */
const STORE_WRITE_BYTES = 2 ** 20;
// A live client that takes no data for this long is dropped so it can't stall the shared fetch.
const STALLED_CLIENT_MS = 60_000;

// Entitlements remembered in memory: cached blobs are immutable and links are never taken back, so
// a hit costs no store lookups (two per request otherwise, on the hot path of range serving).
const REMEMBERED = 20_000;

export class BlobCache {
  readonly #deps: BlobCacheDeps;
  readonly #inflight = new Map<string, Promise<BlobFetch>>();
  /** `name@digest` → size, least recently used first. */
  readonly #entitled = new Map<string, BlobInfo>();

  readonly #steps: BlobSteps | null;

  constructor(deps: BlobCacheDeps) {
    this.#deps = deps;
    const { store } = deps;
    this.#steps = deps.stepBytes && store.multipart ? new BlobSteps({ ...deps, store: store as ContentStore & { multipart: ResumableUploads }, stepBytes: deps.stepBytes }) : null;
  }

  /**
   * The cached blob's size when `name` is entitled to it, else null. A blob cached through another
   * repository is shown to `name` only after the upstream confirms `name` has it too.
   */
  async cached(name: string, digest: Digest): Promise<BlobInfo | null> {
    const known = this.remembered(name, digest);
    if (known) return known;
    const key = `${name}@${digest.value}`;
    const { store } = this.#deps;
    const info = await store.stat(blobKey(digest));
    if (!info) return null;
    if (!(await store.stat(blobLinkKey(name, digest)))) {
      await this.upstreamHead(name, digest); // throws unless the upstream has it under this name
      await this.#link(name, digest);
    }
    this.#entitled.set(key, { size: info.size });
    if (this.#entitled.size > REMEMBERED) this.#entitled.delete(this.#entitled.keys().next().value!);
    return info;
  }

  /**
   * Throws unless `name` may see the blob, whether or not it is cached: a link records that it was
   * fetched or confirmed under `name` before; without one, the upstream is asked. For what was made
   * from a blob (converted layers), which may outlive it in a bounded store.
   */
  async entitled(name: string, digest: Digest): Promise<void> {
    if (this.remembered(name, digest) || (await this.#deps.store.stat(blobLinkKey(name, digest)))) return;
    await this.upstreamHead(name, digest);
    await this.#link(name, digest);
  }

  /** `cached` without touching the store or the upstream: the answer when it is in memory, else null. */
  remembered(name: string, digest: Digest): BlobInfo | null {
    const key = `${name}@${digest.value}`;
    const known = this.#entitled.get(key);
    if (!known) return null;
    this.#entitled.delete(key);
    this.#entitled.set(key, known);
    return known;
  }

  /** The blob is gone from the store (removed behind the proxy's back): stop answering from memory. */
  forget(digest: Digest): void {
    for (const key of this.#entitled.keys()) if (key.endsWith(`@${digest.value}`)) this.#entitled.delete(key);
  }

  /** Asks the upstream for the blob's size without downloading it. */
  async upstreamHead(name: string, digest: Digest): Promise<BlobInfo> {
    const res = await this.#deps.upstream.request(name, `blobs/${digest.value}`, { method: "HEAD" });
    if (!res.ok) throw await upstreamError(res, "blob", `blob ${digest.value} in ${name}`);
    await res.body?.cancel();
    const size = parseLength(res.headers.get("content-length"));
    if (size === null) throw new OciError("UNAVAILABLE", `upstream sent no valid Content-Length for blob ${digest.value}`);
    return { size };
  }

  /**
   * Starts the upstream fetch of a missing blob, or joins the one already running. A blob fetched
   * in steps is never live: `done` settles when this request's step has, and rejects with
   * BlobPending (503 + Retry-After) until the step that publishes it.
   */
  fetch(name: string, digest: Digest, live: FetchMode): Promise<BlobFetch> {
    const key = `${name}@${digest.value}`;
    const running = this.#inflight.get(key);
    if (running) return running.then((f) => ({ size: f.size, live: null, done: f.done }));
    const started = live === true || !this.#steps ? this.#start(name, digest, live !== false) : this.#startStepped(name, digest, live);
    this.#inflight.set(key, started);
    const forget = () => this.#inflight.delete(key);
    started.then((f) => f.done.then(forget, forget), forget);
    return started;
  }

  async #start(name: string, digest: Digest, live: boolean): Promise<BlobFetch> {
    const { store, upstream, hasher, metrics } = this.#deps;
    const res = await upstream.request(name, `blobs/${digest.value}`);
    if (res.status !== 200 || !res.body) {
      if (res.ok) await res.body?.cancel();
      throw res.ok
        ? new OciError("UNAVAILABLE", `upstream answered HTTP ${res.status} to a full blob request`)
        : await upstreamError(res, "blob", `blob ${digest.value} in ${name}`);
    }
    const size = parseLength(res.headers.get("content-length"));
    // A store that refuses the blob fails only the clients waiting for it to be cached.
    let storeError: unknown = null;
    const storeFailed = (err: unknown) => {
      storeError = err instanceof StoreFullError ? err : new OciError("UNKNOWN", `skiff's store could not write blob ${digest.value}`);
      this.#deps.log?.(`store: ${(err as Error).message}`);
    };
    let upload: Upload | null = await store.put(blobKey(digest)).catch((err: unknown) => {
      storeFailed(err);
      return null;
    });
    const batched = upload && new BatchedWriter((bytes) => upload!.write(bytes), STORE_WRITE_BYTES);
    const pipe = live ? new TransformStream<Uint8Array, Uint8Array>(undefined, undefined, { highWaterMark: LIVE_QUEUE_CHUNKS }) : null;
    const writer = pipe?.writable.getWriter() ?? null;
    let clientGone = !writer;

    // Sends a chunk to the live client; a client that went away stops receiving, the fetch goes on.
    const send = async (chunk: Uint8Array) => {
      if (clientGone) return;
      let timer: ReturnType<typeof setTimeout> | undefined;
      const stalled = new Promise<"stalled">((resolve) => (timer = setTimeout(resolve, STALLED_CLIENT_MS, "stalled")));
      try {
        if ((await Promise.race([writer!.ready, stalled])) === "stalled") {
          clientGone = true;
          writer!.abort(new Error("client stalled")).catch(() => {});
          return;
        }
        writer!.write(chunk).catch(() => {});
      } catch {
        clientGone = true;
      } finally {
        clearTimeout(timer);
      }
    };

    const reader = coalesce(res.body, COALESCE_BYTES).getReader();
    const done = (async () => {
      const h = hasher(digest.algorithm);
      let held: Uint8Array | null = null;
      let total = 0;
      try {
        for (;;) {
          const { done: end, value } = await reader.read();
          if (end) break;
          total += value.byteLength;
          if (size !== null && total > size) throw new OciError("UNAVAILABLE", `upstream sent more than the ${size} bytes it announced for ${digest.value}`);
          h.update(value);
          metrics.inc("skiff_upstream_bytes_total", {}, value.byteLength);
          try {
            if (upload) await batched!.write(value);
          } catch (err) {
            storeFailed(err);
            await batched!.settle();
            await upload!.cancel();
            upload = null;
          }
          if (storeError !== null && clientGone) throw storeError;
          // Only the bytes that complete the blob wait for the digest check; of a blob whose size
          // was not announced, each piece waits for the next. Holding every piece back until the
          // next came left the client of an upstream that stalls after one large piece with nothing.
          if (held) await send(held);
          held = null;
          if (size === null || total === size) held = value;
          else await send(value);
        }
        if (size !== null && total !== size) throw new OciError("UNAVAILABLE", `upstream sent ${total} of ${size} bytes for ${digest.value}`);
        if (h.hex() !== digest.hex) {
          metrics.inc("skiff_verification_failures_total", { kind: "blob" });
          throw new OciError("UNAVAILABLE", `upstream blob bytes do not match digest ${digest.value}`);
        }
        if (upload !== null) {
          try {
            await batched!.flush();
            await upload.commit();
            await this.#link(name, digest);
          } catch (err) {
            storeFailed(err);
          }
        }
        if (held) await send(held);
        if (!clientGone) await writer!.close().catch(() => {});
        if (storeError !== null) throw storeError;
        return total;
      } catch (err) {
        await batched?.settle();
        await upload?.cancel();
        reader.cancel().catch(() => {});
        writer?.abort(err).catch(() => {});
        this.#deps.log?.(`blob ${digest.value} (${name}) not cached: ${(err as Error).message}`);
        throw asBlobError(err, digest);
      }
    })();
    done.catch(() => {}); // failures reach whoever awaits; never an unhandled rejection
    return { size, live: pipe?.readable ?? null, done };
  }

  /** A fetch without a live client: one step when the blob is larger than a step (or a fetch is already under way in steps), else whole. */
  async #startStepped(name: string, digest: Digest, live: FetchMode): Promise<BlobFetch> {
    const steps = this.#steps!;
    const { size } = await this.upstreamHead(name, digest);
    if (size <= steps.stepBytes && !(await steps.underWay(digest))) return this.#start(name, digest, live !== false);
    const done = steps.step(name, digest, size).then(async (stored) => {
      await this.#link(name, digest);
      return stored;
    });
    done.catch(() => {}); // failures reach whoever awaits; never an unhandled rejection
    return { size, live: null, done };
  }

  async #link(name: string, digest: Digest): Promise<void> {
    const upload = await this.#deps.store.put(blobLinkKey(name, digest));
    await upload.commit();
  }
}

/** Store failures as the proxy's own, anything else as the upstream's. */
function asBlobError(err: unknown, digest: Digest): unknown {
  if (err instanceof OciError || err instanceof StoreFullError) return err;
  const message = (err as Error).message;
  return new OciError("UNAVAILABLE", `upstream transfer of ${digest.value} failed: ${message}`);
}

function parseLength(value: string | null): number | null {
  if (value === null || !/^\d{1,16}$/.test(value.trim())) return null;
  const n = Number(value.trim());
  return Number.isSafeInteger(n) ? n : null;
}
