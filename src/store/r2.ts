// Cloudflare R2 store, over a Worker's bucket binding. R2 has no rename, so the atomic publish is a
// multipart upload: parts go up while the caller streams (and hashes), complete() publishes the
// object in commit() and abort() discards it. An isolate has 128 MB for all its requests, so an
// upload holds at most one part being filled and one part in flight, never the whole object.
import { assertValidKey, type ByteSpan, type ContentStore, type ListedObject, type ObjectInfo, type ResumableUploads, type UploadedPart, type Upload, type Versioned } from "./store.ts";

// The subset of the Workers R2 API used here (names and shapes as in @cloudflare/workers-types),
// declared structurally so the core needs no Cloudflare dependency.
export interface R2ObjectLike {
  readonly size: number;
  readonly etag: string;
}

export interface R2ObjectBodyLike extends R2ObjectLike {
  readonly body: ReadableStream<Uint8Array>;
  arrayBuffer(): Promise<ArrayBuffer>;
}

export interface R2UploadedPartLike {
  partNumber: number;
  etag: string;
}

export interface R2MultipartUploadLike {
  readonly key: string;
  readonly uploadId: string;
  uploadPart(partNumber: number, value: Uint8Array): Promise<R2UploadedPartLike>;
  complete(uploadedParts: R2UploadedPartLike[]): Promise<unknown>;
  abort(): Promise<void>;
}

export interface R2BucketLike {
  head(key: string): Promise<R2ObjectLike | null>;
  get(key: string, options?: { range?: { offset: number; length: number } }): Promise<R2ObjectBodyLike | null>;
  /** With `onlyIf`, null when the condition failed. */
  put(key: string, value: Uint8Array, options?: { onlyIf?: { etagMatches?: string; etagDoesNotMatch?: string } }): Promise<R2ObjectLike | null>;
  delete(keys: string | string[]): Promise<void>;
  createMultipartUpload(key: string): Promise<R2MultipartUploadLike>;
  /** An upload begun earlier, perhaps by another invocation (no request is made). */
  resumeMultipartUpload?(key: string, uploadId: string): R2MultipartUploadLike;
  list(options: { prefix?: string; cursor?: string; limit?: number }): Promise<R2ObjectsLike>;
}

export interface R2ObjectsLike {
  objects: { key: string; size: number; uploaded: Date }[];
  truncated: boolean;
  cursor?: string;
}

// R2's multipart rules: every part but the last the same size, 5 MiB to 5 GiB, at most 10,000 parts.
export const MIN_PART_SIZE = 5 * 2 ** 20;
export const MAX_PART_SIZE = 5 * 2 ** 30;
export const MAX_PARTS = 10_000;
/** 8 MiB: two per upload stay well inside an isolate's memory; 10,000 of them make 78 GiB. */
export const DEFAULT_PART_SIZE = 8 * 2 ** 20;

export interface R2StoreOptions {
  /** Size of every part but the last, and the largest object written with a single put. */
  partSize?: number;
}

export class R2Store implements ContentStore {
  readonly #bucket: R2BucketLike;
  readonly #partSize: number;
  readonly multipart: ResumableUploads | undefined;

  constructor(bucket: R2BucketLike, options: R2StoreOptions = {}) {
    const partSize = options.partSize ?? DEFAULT_PART_SIZE;
    if (!Number.isSafeInteger(partSize) || partSize < MIN_PART_SIZE || partSize > MAX_PART_SIZE) {
      throw new RangeError(`R2 part size must be an integer from ${MIN_PART_SIZE} to ${MAX_PART_SIZE} bytes, not ${partSize}`);
    }
    this.#bucket = bucket;
    this.#partSize = partSize;
    this.multipart = bucket.resumeMultipartUpload ? new R2ResumableUploads(bucket, partSize) : undefined;
  }

  /** A page of up to 1,000 objects per call to the bucket, as R2 lists them. */
  async *list(prefix = ""): AsyncIterable<ListedObject> {
    let cursor: string | undefined;
    do {
      const page = await this.#bucket.list({ prefix, cursor, limit: 1000 });
      for (const o of page.objects) yield { key: o.key, size: o.size, modifiedMs: o.uploaded.getTime() };
      cursor = page.truncated ? page.cursor : undefined;
    } while (cursor);
  }

  async stat(key: string): Promise<ObjectInfo | null> {
    assertValidKey(key);
    const obj = await this.#bucket.head(key);
    return obj ? { size: obj.size } : null;
  }

  async get(key: string, span?: ByteSpan): Promise<ReadableStream<Uint8Array> | null> {
    assertValidKey(key);
    if (!span) return (await this.#bucket.get(key))?.body ?? null;
    // R2 refuses an empty range; the other stores answer it with no bytes.
    if (span.length <= 0) return (await this.#bucket.head(key)) ? emptyStream() : null;
    try {
      return (await this.#bucket.get(key, { range: { offset: span.offset, length: span.length } }))?.body ?? null;
    } catch (err) {
      // R2 also refuses a range that starts at or past the end (and any range of an empty object),
      // where the other stores answer with no bytes; only the size tells that case from a failure.
      const obj = await this.#bucket.head(key);
      if (!obj) return null;
      if (span.offset >= obj.size) return emptyStream();
      throw err;
    }
  }

  async put(key: string): Promise<Upload> {
    assertValidKey(key);
    return new R2Upload(this.#bucket, key, this.#partSize);
  }

  async delete(key: string): Promise<void> {
    assertValidKey(key);
    await this.#bucket.delete(key);
  }

  // R2's conditional writes are the compare-and-swap: the etag is the version, and
  // `etagDoesNotMatch: "*"` means "only if there is no such object".
  async getVersioned(key: string): Promise<Versioned | null> {
    assertValidKey(key);
    const obj = await this.#bucket.get(key);
    return obj ? { bytes: new Uint8Array(await obj.arrayBuffer()), version: obj.etag } : null;
  }

  async putIfVersion(key: string, bytes: Uint8Array, expected: string | null): Promise<string | null> {
    assertValidKey(key);
    const written = await this.#bucket.put(key, bytes, { onlyIf: expected === null ? { etagDoesNotMatch: "*" } : { etagMatches: expected } });
    return written?.etag ?? null;
  }
}

/** R2's multipart uploads by id: each call resumes the upload, which costs no request of its own. */
class R2ResumableUploads implements ResumableUploads {
  readonly #bucket: R2BucketLike;
  readonly partSize: number;
  readonly maxParts = MAX_PARTS;

  constructor(bucket: R2BucketLike, partSize: number) {
    this.#bucket = bucket;
    this.partSize = partSize;
  }

  async begin(key: string): Promise<string> {
    assertValidKey(key);
    return (await this.#bucket.createMultipartUpload(key)).uploadId;
  }

  async putPart(key: string, uploadId: string, partNumber: number, bytes: Uint8Array): Promise<UploadedPart> {
    const { partNumber: n, etag } = await this.#resume(key, uploadId).uploadPart(partNumber, bytes);
    return { partNumber: n, etag };
  }

  async complete(key: string, uploadId: string, parts: UploadedPart[]): Promise<void> {
    await this.#resume(key, uploadId).complete(parts);
  }

  async abort(key: string, uploadId: string): Promise<void> {
    await this.#resume(key, uploadId).abort().catch(() => {}); // gone already, or R2 expires it after 7 days
  }

  #resume(key: string, uploadId: string): R2MultipartUploadLike {
    assertValidKey(key);
    return this.#bucket.resumeMultipartUpload!(key, uploadId);
  }
}

// Small objects (manifests, links, records) start with a small buffer rather than a whole part.
const INITIAL_BUFFER = 64 * 1024;
const NO_BYTES = new Uint8Array(0);

class R2Upload implements Upload {
  readonly #bucket: R2BucketLike;
  readonly #key: string;
  readonly #partSize: number;
  /** The part being filled: never more than partSize; sent only once more bytes follow it. */
  #buf: Uint8Array = NO_BYTES;
  #filled = 0;
  #multipart: R2MultipartUploadLike | null = null;
  readonly #parts: R2UploadedPartLike[] = [];
  /** The one part on its way to R2 while the next fills. */
  #inflight: Promise<void> | null = null;
  /** Set when commit or cancel starts: no more writes. */
  #finished = false;
  /** A failed write leaves a hole in the parts: the upload can only be cancelled. */
  #failure: unknown = null;
  /** Calls run one at a time, in order, so parts are numbered as the bytes came. */
  #queue: Promise<unknown> = Promise.resolve();

  constructor(bucket: R2BucketLike, key: string, partSize: number) {
    this.#bucket = bucket;
    this.#key = key;
    this.#partSize = partSize;
  }

  write(chunk: Uint8Array): Promise<void> {
    return this.#serial(async () => {
      if (this.#finished) throw new Error("upload already finished");
      if (this.#failure) throw this.#failure;
      try {
        let at = 0;
        while (at < chunk.byteLength) {
          if (this.#filled === this.#partSize) await this.#sendPart();
          const take = Math.min(chunk.byteLength - at, this.#partSize - this.#filled);
          this.#reserve(this.#filled + take);
          this.#buf.set(chunk.subarray(at, at + take), this.#filled); // a copy: the caller reuses chunk
          this.#filled += take;
          at += take;
        }
      } catch (err) {
        this.#failure = err;
        throw err;
      }
    });
  }

  commit(): Promise<void> {
    return this.#serial(async () => {
      if (this.#finished) throw new Error("upload already finished");
      this.#finished = true;
      try {
        if (this.#failure) throw this.#failure;
        const last = this.#buf.subarray(0, this.#filled);
        if (!this.#multipart) {
          await this.#bucket.put(this.#key, last);
        } else {
          await this.#settleInflight();
          // Never empty: a full part is only sent once a byte of the next one has arrived.
          if (last.byteLength > 0) this.#parts.push(await this.#multipart.uploadPart(this.#nextPartNumber(), last));
          await this.#multipart.complete(this.#parts);
        }
        this.#buf = NO_BYTES;
      } catch (err) {
        await this.#discard();
        throw err;
      }
    });
  }

  cancel(): Promise<void> {
    return this.#serial(async () => {
      // After a commit (published, or discarded when it failed) there is nothing left to undo.
      if (this.#finished) return;
      this.#finished = true;
      await this.#discard();
    });
  }

  #serial<T>(op: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(op);
    this.#queue = run.catch(() => {});
    return run;
  }

  /** Grows the buffer to hold n bytes: doubling while the object may still fit one put, a whole part once it is multipart. */
  #reserve(n: number): void {
    if (n <= this.#buf.byteLength) return;
    const size = this.#multipart ? this.#partSize : Math.min(this.#partSize, Math.max(n, INITIAL_BUFFER, this.#buf.byteLength * 2));
    const grown = new Uint8Array(size);
    grown.set(this.#buf.subarray(0, this.#filled));
    this.#buf = grown;
  }

  /** Sends the full buffer as the next part, after the previous part has landed (so at most one is in flight). */
  async #sendPart(): Promise<void> {
    await this.#settleInflight();
    this.#multipart ??= await this.#bucket.createMultipartUpload(this.#key);
    const multipart = this.#multipart;
    // More bytes follow this part, so there must be room for at least one more after it.
    if (this.#parts.length + 2 > MAX_PARTS) {
      throw new Error(`object too large for R2: more than ${MAX_PARTS} parts of ${this.#partSize} bytes`);
    }
    const partNumber = this.#nextPartNumber();
    const part = this.#buf;
    this.#buf = NO_BYTES;
    this.#filled = 0;
    const sent = multipart.uploadPart(partNumber, part).then((uploaded) => {
      this.#parts.push(uploaded);
    });
    sent.catch(() => {}); // its failure surfaces when it is awaited, never as an unhandled rejection
    this.#inflight = sent;
  }

  #nextPartNumber(): number {
    return this.#parts.length + 1;
  }

  async #settleInflight(): Promise<void> {
    const inflight = this.#inflight;
    this.#inflight = null;
    if (inflight) await inflight;
  }

  /** Drops the buffer and aborts the multipart upload; errors are swallowed (R2 expires abandoned uploads after 7 days). */
  async #discard(): Promise<void> {
    this.#buf = NO_BYTES;
    this.#filled = 0;
    // Abort after the part in flight has settled, so it cannot land in an aborted upload.
    await this.#settleInflight().catch(() => {});
    const multipart = this.#multipart;
    this.#multipart = null;
    if (multipart) await multipart.abort().catch(() => {});
  }
}

function emptyStream(): ReadableStream<Uint8Array> {
  return new ReadableStream<Uint8Array>({
    start(controller) {
      controller.close();
    },
  });
}
