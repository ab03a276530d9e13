// A blob fetched from the upstream in steps, one per request, for a runtime that limits what one
// invocation may do (Workers: CPU and wall time). Each step asks the upstream for the next range
// (`Range: bytes=a-b`; a registry that answers 200 with the whole body is read from offset a), writes
// it as parts of one multipart upload that outlives the invocation, and records where it stopped in
// a small checkpoint object: the upload's id, the parts so far, and the hash state at that point,
// so the digest is checked over the whole blob without a final pass over it (src/hash/resumable.ts).
// A lease keeps two invocations from writing the same parts. The step that writes the last part
// checks the digest: a match completes the upload (the blob is published, whole, at once); a
// mismatch aborts it and forgets the checkpoint, and the next request starts over.
import { ResumableHash, type HashState } from "../hash/resumable.ts";
import { OciError } from "../oci/errors.ts";
import type { Digest } from "../oci/reference.ts";
import { upstreamError } from "../oci/upstream-errors.ts";
import type { RegistryClient } from "../oci/upstreams.ts";
import { blobFetchCheckpointKey, blobFetchLeaseKey, blobKey } from "../store/keys.ts";
import { Lease, LeaseLost } from "../store/lease.ts";
import { getBytes, putBytes, type ContentStore, type ResumableUploads, type UploadedPart } from "../store/store.ts";
import type { Metrics } from "../util/metrics.ts";

/** The blob is not whole yet: this request's step is done, or another instance is fetching it. */
export class BlobPending extends OciError {
  constructor(message: string) {
    super("UNAVAILABLE", message, { status: 503, headers: { "Retry-After": "1" } });
  }
}

export interface BlobStepsDeps {
  store: ContentStore & { multipart: ResumableUploads };
  upstream: RegistryClient;
  metrics: Metrics;
  /** Upstream bytes one step fetches at most: rounded up to whole parts. */
  stepBytes: number;
  /** How long another instance waits before taking over a fetch whose fetcher went silent. */
  leaseMs?: number;
  log?: (message: string) => void;
  now?: () => number;
}

interface FetchCheckpoint {
  digest: string;
  size: number;
  uploadId: string;
  parts: UploadedPart[];
  /** The hash of the first `hash.length` bytes: the bytes the parts hold. */
  hash: HashState;
}

const DEFAULT_LEASE_MS = 60_000;
/** What a checkpoint may weigh: its parts list is 10,000 entries at most. */
const MAX_CHECKPOINT_BYTES = 2 * 2 ** 20;

export class BlobSteps {
  readonly #deps: BlobStepsDeps;

  constructor(deps: BlobStepsDeps) {
    this.#deps = deps;
  }

  /** Bytes fetched by one step: whole parts, so every part but the blob's last is full. */
  get stepBytes(): number {
    const part = this.#deps.store.multipart.partSize;
    return Math.max(1, Math.ceil(this.#deps.stepBytes / part)) * part;
  }

  /** Whether a fetch of this blob is under way in steps (a checkpoint exists). */
  async underWay(digest: Digest): Promise<boolean> {
    return (await this.#deps.store.stat(blobFetchCheckpointKey(digest))) !== null;
  }

  /**
   * Fetches the next step of the blob, `size` bytes long as the upstream announced. Resolves with the
   * size once the verified blob is published; throws BlobPending when more steps are needed (or
   * another instance holds the fetch), and the digest or upstream error when it failed.
   */
  async step(name: string, digest: Digest, size: number): Promise<number> {
    const { store, leaseMs, now } = this.#deps;
    const lease = await Lease.acquire(store, blobFetchLeaseKey(digest), { ttlMs: leaseMs ?? DEFAULT_LEASE_MS, now });
    if (!lease) throw new BlobPending(`blob ${digest.value} is being fetched by another instance; retry`);
    try {
      // Published meanwhile (by another instance's last step, or a client's whole fetch).
      const stored = await store.stat(blobKey(digest));
      if (stored) {
        await this.#forget(digest, await this.#checkpoint(digest));
        return stored.size;
      }
      return await this.#step(name, digest, size, lease);
    } catch (err) {
      if (err instanceof LeaseLost) throw new BlobPending(`blob ${digest.value} was taken over by another instance; retry`);
      throw err;
    } finally {
      await lease.release();
    }
  }

  async #step(name: string, digest: Digest, announced: number, lease: Lease): Promise<number> {
    const { store, metrics } = this.#deps;
    const { multipart } = store;
    const key = blobKey(digest);
    let cp = await this.#checkpoint(digest);
    if (cp && cp.size !== announced) {
      this.#deps.log?.(`blob ${digest.value}: the upstream's size changed from ${cp.size} to ${announced}; fetching it again`);
      await this.#forget(digest, cp);
      cp = null;
    }
    if (!cp) {
      if (Math.ceil(announced / multipart.partSize) > multipart.maxParts) {
        throw new OciError("SIZE_INVALID", `blob ${digest.value} is ${announced} bytes: too large for the store's parts of ${multipart.partSize} bytes`, { status: 422 });
      }
      cp = { digest: digest.value, size: announced, uploadId: await multipart.begin(key), parts: [], hash: ResumableHash.start(digest.algorithm).state() };
      await this.#save(digest, cp, lease);
    }
    const from = cp.hash.length;
    const to = Math.min(cp.size, from + this.stepBytes);
    const hash = ResumableHash.resume(cp.hash);
    const part = new Uint8Array(Math.min(multipart.partSize, to - from));
    let filled = 0;
    const reader = (await this.#ranged(name, digest, from, to, cp.size)).getReader();
    try {
      let at = from;
      while (at < to) {
        const { done, value } = await reader.read();
        if (done) throw new OciError("UNAVAILABLE", `upstream ended blob ${digest.value} at byte ${at} of the range ${from}-${to - 1}`);
        metrics.inc("skiff_upstream_bytes_total", {}, value.byteLength);
        let taken = 0;
        const usable = Math.min(value.byteLength, to - at);
        while (taken < usable) {
          const n = Math.min(usable - taken, part.byteLength - filled);
          part.set(value.subarray(taken, taken + n), filled);
          filled += n;
          taken += n;
          if (filled === part.byteLength || at + taken === to) {
            const bytes = part.subarray(0, filled);
            hash.update(bytes);
            await lease.confirm();
            cp.parts.push(await multipart.putPart(key, cp.uploadId, cp.parts.length + 1, bytes));
            cp.hash = hash.state();
            filled = 0;
            // Every part recorded at once: an invocation cut off loses one part's work at most.
            if (cp.hash.length < cp.size) await this.#save(digest, cp, lease);
          }
        }
        at += usable;
      }
    } finally {
      reader.cancel().catch(() => {});
    }
    if (cp.hash.length < cp.size) {
      metrics.inc("skiff_blob_fetch_steps_total");
      throw new BlobPending(`blob ${digest.value} is being fetched in steps: ${cp.hash.length} of ${cp.size} bytes; retry`);
    }
    if (hash.hex() !== digest.hex) {
      metrics.inc("skiff_verification_failures_total", { kind: "blob" });
      await this.#forget(digest, cp);
      this.#deps.log?.(`blob ${digest.value} (${name}) not cached: the upstream's bytes do not match the digest`);
      throw new OciError("UNAVAILABLE", `upstream blob bytes do not match digest ${digest.value}`);
    }
    await lease.confirm();
    await multipart.complete(key, cp.uploadId, cp.parts);
    await store.delete(blobFetchCheckpointKey(digest)).catch(() => {});
    return cp.size;
  }

  /** The upstream's bytes from..to-1 of the blob: its 206 answer, or its 200 answer read from `from`. */
  async #ranged(name: string, digest: Digest, from: number, to: number, size: number): Promise<ReadableStream<Uint8Array>> {
    const res = await this.#deps.upstream.request(name, `blobs/${digest.value}`, { headers: { Range: `bytes=${from}-${to - 1}` } });
    if (!res.ok || !res.body) {
      if (res.ok) throw new OciError("UNAVAILABLE", `upstream sent no body for blob ${digest.value}`);
      throw await upstreamError(res, "blob", `blob ${digest.value} in ${name}`);
    }
    if (res.status === 206) {
      const range = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(res.headers.get("content-range")?.trim() ?? "");
      if (!range || Number(range[1]) !== from || Number(range[2]) < Math.min(to, size) - 1 || (range[3] !== "*" && Number(range[3]) !== size)) {
        await res.body.cancel();
        throw new OciError("UNAVAILABLE", `upstream answered the range ${from}-${to - 1} of blob ${digest.value} with ${JSON.stringify(res.headers.get("content-range"))}`);
      }
      return res.body;
    }
    if (res.status !== 200) {
      await res.body.cancel();
      throw new OciError("UNAVAILABLE", `upstream answered HTTP ${res.status} to a range of blob ${digest.value}`);
    }
    return from === 0 ? res.body : res.body.pipeThrough(skipBytes(from));
  }

  async #checkpoint(digest: Digest): Promise<FetchCheckpoint | null> {
    const bytes = await getBytes(this.#deps.store, blobFetchCheckpointKey(digest), MAX_CHECKPOINT_BYTES).catch(() => null);
    if (!bytes) return null;
    try {
      const cp = JSON.parse(new TextDecoder().decode(bytes)) as FetchCheckpoint;
      const fits = cp.digest === digest.value && Number.isSafeInteger(cp.size) && typeof cp.uploadId === "string" && Array.isArray(cp.parts) && cp.hash?.algorithm === digest.algorithm;
      if (fits) {
        ResumableHash.resume(cp.hash); // throws on a damaged state
        const partSize = this.#deps.store.multipart.partSize;
        if (cp.parts.length === Math.ceil(cp.hash.length / partSize) && cp.hash.length <= cp.size && cp.parts.every((p, i) => p?.partNumber === i + 1 && typeof p.etag === "string")) return cp;
      }
    } catch {
      // unreadable: started over below
    }
    this.#deps.log?.(`blob ${digest.value}: unusable fetch checkpoint; fetching it again`);
    await this.#deps.store.delete(blobFetchCheckpointKey(digest)).catch(() => {});
    return null;
  }

  async #save(digest: Digest, cp: FetchCheckpoint, lease: Lease): Promise<void> {
    await lease.confirm();
    await putBytes(this.#deps.store, blobFetchCheckpointKey(digest), new TextEncoder().encode(JSON.stringify(cp)));
  }

  /** Drops a fetch: its upload (and parts) and its checkpoint. */
  async #forget(digest: Digest, cp: FetchCheckpoint | null): Promise<void> {
    const { store } = this.#deps;
    if (cp) await store.multipart.abort(blobKey(digest), cp.uploadId);
    await store.delete(blobFetchCheckpointKey(digest)).catch(() => {});
  }
}

/** Drops the stream's first `n` bytes. */
function skipBytes(n: number): TransformStream<Uint8Array, Uint8Array> {
  let left = n;
  return new TransformStream({
    transform(chunk, controller) {
      if (left >= chunk.byteLength) {
        left -= chunk.byteLength;
        return;
      }
      controller.enqueue(left > 0 ? chunk.subarray(left) : chunk);
      left = 0;
    },
  });
}
