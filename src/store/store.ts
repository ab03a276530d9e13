// The content store: where verified blobs, manifests and cache records live. Modelled on the
// Distribution registry's storage drivers: a small key/value interface, streamed both ways, and a
// put that becomes visible only on commit, so a reader never sees half an object.

import { readAll } from "../util/streams.ts";

export interface ObjectInfo {
  size: number;
}

/** One object as a listing names it: for eviction and garbage collection, not for serving. */
export interface ListedObject {
  key: string;
  size: number;
  /** When it was last written (ms since the epoch). */
  modifiedMs: number;
}

export interface ByteSpan {
  offset: number;
  length: number;
}

/** A pending write. Nothing is visible under the key until commit() resolves. */
export interface Upload {
  /** The caller may reuse `chunk` once the promise resolves: a store that keeps it must copy it. */
  write(chunk: Uint8Array): Promise<void>;
  /** Publishes the object atomically (replacing any previous one). */
  commit(): Promise<void>;
  /** Discards everything written; safe to call more than once or after a failed commit. */
  cancel(): Promise<void>;
}

/** A small object and the version a conditional write must name to replace it. */
export interface Versioned {
  bytes: Uint8Array;
  version: string;
}

export interface ContentStore {
  stat(key: string): Promise<ObjectInfo | null>;
  /** The object's bytes, or the span of them; null when absent. */
  get(key: string, span?: ByteSpan): Promise<ReadableStream<Uint8Array> | null>;
  put(key: string): Promise<Upload>;
  delete(key: string): Promise<void>;
  /**
   * A span's bytes at once, where the store can read them faster than through a stream (small range
   * answers: no stream per request). Clamped at the end like get; null when absent. Read into
   * `into` (at least `span.length` bytes) when given: the answer is then a view of it.
   */
  readSpan?(key: string, span: ByteSpan, into?: Uint8Array<ArrayBuffer>): Promise<Uint8Array<ArrayBuffer> | null>;
  /**
   * Compare-and-swap on small records (conversion leases), offered by stores that several processes
   * share (R2). A store that one process owns leaves both out: single flight in the process suffices.
   */
  getVersioned?(key: string): Promise<Versioned | null>;
  /** Writes `bytes` only if the object's version is still `expected` (null: only if there is none); the new version, or null when it was not. */
  putIfVersion?(key: string, bytes: Uint8Array, expected: string | null): Promise<string | null>;
  /** Every object whose key starts with `prefix` (all when empty), in no particular order. */
  list?(prefix?: string): AsyncIterable<ListedObject>;
  /** Multipart uploads that outlive the process that began them (R2): a blob fetched in steps across invocations. */
  multipart?: ResumableUploads;
}

/** One part of a resumable upload, as completing it names the part. */
export interface UploadedPart {
  partNumber: number;
  etag: string;
}

/**
 * An upload named by an id that any process sharing the store can go on with. Nothing is visible
 * under the key until complete() resolves; parts are numbered from 1, all but the last `partSize` bytes.
 */
export interface ResumableUploads {
  readonly partSize: number;
  /** The most parts one upload may have. */
  readonly maxParts: number;
  begin(key: string): Promise<string>;
  putPart(key: string, uploadId: string, partNumber: number, bytes: Uint8Array): Promise<UploadedPart>;
  complete(key: string, uploadId: string, parts: UploadedPart[]): Promise<void>;
  /** Discards the upload and its parts; an upload already gone is no error. */
  abort(key: string, uploadId: string): Promise<void>;
}

/**
 * The store has no room left (a full disk, a quota): nothing was written under the key. A mirror
 * answers it as its own trouble, not the upstream's, and goes on serving what it holds.
 */
export class StoreFullError extends Error {
  constructor(key: string, reason: string) {
    super(`skiff's store is full (${reason}): could not write ${key}`);
    this.name = "StoreFullError";
  }
}

// Keys are built only from validated names, tags and digests; this check is the last line of
// defence against a key escaping the store (path traversal on the filesystem backend).
const SEGMENT = /^[A-Za-z0-9_][A-Za-z0-9._-]*$/;

export function assertValidKey(key: string): void {
  if (key.length === 0 || key.length > 1024) throw new Error(`invalid store key length: ${key.length}`);
  for (const seg of key.split("/")) {
    if (!SEGMENT.test(seg)) throw new Error(`invalid store key: ${JSON.stringify(key)}`);
  }
}

export async function getBytes(store: ContentStore, key: string, limit?: number): Promise<Uint8Array<ArrayBuffer> | null> {
  const stream = await store.get(key);
  return stream ? readAll(stream, limit) : null;
}

export async function putBytes(store: ContentStore, key: string, data: Uint8Array): Promise<void> {
  const upload = await store.put(key);
  try {
    await upload.write(data);
    await upload.commit();
  } catch (err) {
    await upload.cancel();
    throw err;
  }
}

export async function getJson<T>(store: ContentStore, key: string): Promise<T | null> {
  const bytes = await getBytes(store, key, 1 << 20);
  if (!bytes) return null;
  try {
    return JSON.parse(new TextDecoder().decode(bytes)) as T;
  } catch {
    return null; // a record we cannot read is treated as absent, never trusted
  }
}

export function putJson(store: ContentStore, key: string, value: unknown): Promise<void> {
  return putBytes(store, key, new TextEncoder().encode(JSON.stringify(value)));
}

/** Every object of a store that can list them (see ContentStore.list), gathered. */
export async function listAll(store: ContentStore, prefix?: string): Promise<ListedObject[]> {
  if (!store.list) throw new Error("this store can't list its objects");
  const listed: ListedObject[] = [];
  for await (const object of store.list(prefix)) listed.push(object);
  return listed;
}
