// Filesystem store: one file per key under a root directory. Writes go to a temporary file in the
// same filesystem and are renamed into place on commit, which is atomic on POSIX. Read handles are
// kept open between reads (./read-handles.ts); this process's own writes and deletes retire them,
// so the store is for one process, as the other single-process parts of the proxy assume.
import { readSync } from "node:fs";
import { mkdir, open, opendir, rename, rm, rmdir, stat, unlink } from "node:fs/promises";
import { dirname, join } from "node:path";
import { ReadHandles, type ReadHandle } from "./read-handles.ts";
import { assertValidKey, StoreFullError, type ByteSpan, type ContentStore, type ListedObject, type Upload } from "./store.ts";

const READ_SIZE = 256 * 1024;

/**
 * An upload is flushed to disk in the background each time this much more has been written, so
 * that its commit waits for the last stretch only: a 311 MB data blob's fsync took 0.2 s at the end
 * of a conversion, 0.04 s after flushes along the way.
 */
const FLUSH_EVERY_BYTES = 64 * 2 ** 20;

export class FsStore implements ContentStore {
  readonly root: string;
  readonly #tmp: string;
  readonly #handles = new ReadHandles();

  constructor(root: string) {
    this.root = root;
    this.#tmp = join(root, ".tmp");
  }

  /** Whether the store's directory exists. */
  async exists(): Promise<boolean> {
    return (await stat(this.root).catch(() => null))?.isDirectory() ?? false;
  }

  /** Creates the directories and clears temporaries left by a crash. */
  async init(): Promise<this> {
    await rm(this.#tmp, { recursive: true, force: true });
    await mkdir(this.#tmp, { recursive: true });
    return this;
  }

  #path(key: string): string {
    assertValidKey(key);
    return join(this.root, key);
  }

  async stat(key: string) {
    try {
      const s = await stat(this.#path(key));
      return s.isFile() ? { size: s.size } : null;
    } catch (err) {
      if (isNotFound(err)) return null;
      throw err;
    }
  }

  async get(key: string, span?: ByteSpan): Promise<ReadableStream<Uint8Array> | null> {
    const handle = await this.#acquire(key);
    if (!handle) return null;
    const { fd, size } = handle;
    let position = span ? span.offset : 0;
    const end = span ? Math.min(size, span.offset + span.length) : size;
    return new ReadableStream<Uint8Array>({
      type: "bytes",
      async pull(controller) {
        try {
          const want = Math.min(READ_SIZE, end - position);
          if (want <= 0) {
            handle.release();
            controller.close();
            return;
          }
          const buf = new Uint8Array(want);
          const bytesRead = readSync(fd, buf, 0, want, position);
          if (bytesRead === 0) throw new Error(`store object ${key} shorter than expected`);
          position += bytesRead;
          controller.enqueue(buf.subarray(0, bytesRead));
        } catch (err) {
          handle.release();
          controller.error(err);
        }
      },
      cancel() {
        handle.release();
      },
    });
  }

  // A blocking read of a few hundred KiB from the page cache costs less than a hop through the
  // thread pool and back, as nginx's default of blocking reads assumes too.
  async readSpan(key: string, span: ByteSpan, into?: Uint8Array<ArrayBuffer>): Promise<Uint8Array<ArrayBuffer> | null> {
    if (into && into.byteLength < span.length) throw new RangeError(`a ${into.byteLength}-byte buffer can't hold ${span.length} bytes`);
    const handle = await this.#acquire(key);
    if (!handle) return null;
    try {
      const length = Math.max(0, Math.min(span.length, handle.size - span.offset));
      const buf = into ? into.subarray(0, length) : Buffer.allocUnsafe(length); // every byte is read over below
      for (let at = 0; at < length; ) {
        const n = readSync(handle.fd, buf, at, length - at, span.offset + at);
        if (n === 0) throw new Error(`store object ${key} shorter than expected`);
        at += n;
      }
      return buf;
    } finally {
      handle.release();
    }
  }

  async #acquire(key: string): Promise<ReadHandle | null> {
    try {
      return await this.#handles.acquire(this.#path(key));
    } catch (err) {
      if (isNotFound(err)) return null;
      throw err;
    }
  }

  async put(key: string): Promise<Upload> {
    const finalPath = this.#path(key);
    const tmpPath = join(this.#tmp, `${Date.now().toString(36)}-${crypto.randomUUID()}`);
    const fh = await open(tmpPath, "wx").catch((err: unknown) => {
      throw asStoreFull(err, key);
    });
    let finished = false;
    let unflushed = 0;
    // The background flush in progress. Its error is the commit's: the kernel reports a failed
    // write-back to one fsync only, so it must not be lost here.
    let flushing: Promise<unknown> | null = null;
    const discard = async () => {
      if (finished) return;
      finished = true;
      await fh.close().catch(() => {});
      await unlink(tmpPath).catch(() => {});
    };
    return {
      write: async (chunk) => {
        if (finished) throw new Error("upload already finished");
        try {
          for (let at = 0; at < chunk.byteLength; ) {
            const { bytesWritten } = await fh.write(chunk, at, chunk.byteLength - at);
            at += bytesWritten;
          }
        } catch (err) {
          throw asStoreFull(err, key);
        }
        unflushed += chunk.byteLength;
        if (unflushed >= FLUSH_EVERY_BYTES && flushing === null) {
          unflushed = 0;
          const flush = fh.datasync();
          flushing = flush;
          flush.then(
            () => void (flushing === flush && (flushing = null)),
            () => {}, // kept in `flushing`: the commit throws it
          );
        }
      },
      commit: async () => {
        if (finished) throw new Error("upload already finished");
        try {
          await flushing;
          await fh.sync();
          await fh.close();
          await renameInto(tmpPath, finalPath);
          this.#handles.forget(finalPath);
          finished = true;
        } catch (err) {
          await discard();
          throw asStoreFull(err, key);
        }
      },
      cancel: discard,
    };
  }

  async delete(key: string) {
    const path = this.#path(key);
    await rm(path, { force: true });
    this.#handles.forget(path);
  }

  /** Walks the directories under the prefix's folder; uploads in progress (`.tmp`) are not objects. */
  async *list(prefix = ""): AsyncIterable<ListedObject> {
    const folder = prefix.includes("/") ? prefix.slice(0, prefix.lastIndexOf("/")) : "";
    yield* this.#walk(folder, prefix);
  }

  async *#walk(folder: string, prefix: string): AsyncIterable<ListedObject> {
    let dir;
    try {
      dir = await opendir(folder ? this.#path(folder) : this.root);
    } catch (err) {
      if (isNotFound(err)) return;
      throw err;
    }
    for await (const entry of dir) {
      const key = folder ? `${folder}/${entry.name}` : entry.name;
      if (key === ".tmp" || !(key.startsWith(prefix) || prefix.startsWith(`${key}/`))) continue;
      if (entry.isDirectory()) {
        yield* this.#walk(key, prefix);
      } else if (entry.isFile()) {
        const s = await stat(join(this.root, key)).catch(() => null); // gone meanwhile: not listed
        if (s) yield { key, size: s.size, modifiedMs: s.mtimeMs };
      }
    }
  }

  /** Removes the empty directories under the root (left by deletes), deepest first; how many (would have been, with `dryRun`). */
  async removeEmptyDirectories(dryRun = false): Promise<number> {
    let removed = 0;
    // Whether `folder` is empty once its empty subdirectories are gone.
    const sweep = async (folder: string): Promise<boolean> => {
      let empty = true;
      for await (const entry of await opendir(join(this.root, folder))) {
        const child = folder ? `${folder}/${entry.name}` : entry.name;
        if (!entry.isDirectory() || child === ".tmp" || !(await sweep(child))) {
          empty = false;
          continue;
        }
        // rmdir refuses a directory a write has filled meanwhile: exactly the test wanted.
        if (dryRun || (await rmdir(join(this.root, child)).then(() => true, () => false))) removed++;
        else empty = false;
      }
      return empty;
    };
    await sweep("");
    return removed;
  }

  /** Uploads in progress, or left by a crash when no proxy runs: how many and their bytes. */
  async uploadsInProgress(): Promise<{ count: number; bytes: number }> {
    let count = 0;
    let bytes = 0;
    const dir = await opendir(this.#tmp).catch((err: unknown) => {
      if (isNotFound(err)) return [];
      throw err;
    });
    for await (const entry of dir) {
      const s = await stat(join(this.#tmp, entry.name)).catch(() => null);
      if (s?.isFile()) (count++, (bytes += s.size));
    }
    return { count, bytes };
  }
}

/** rename() into a directory made first; once more when a sweep of empty directories removed it in between. */
async function renameInto(from: string, to: string): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    await mkdir(dirname(to), { recursive: true });
    try {
      return await rename(from, to);
    } catch (err) {
      if (attempt > 0 || (err as { code?: string }).code !== "ENOENT") throw err;
    }
  }
}

/** A full disk or quota as StoreFullError (whose message names the key, not a path); others as they are. */
function asStoreFull(err: unknown, key: string): unknown {
  const code = (err as { code?: string }).code;
  return code === "ENOSPC" || code === "EDQUOT" ? new StoreFullError(key, code) : err;
}

function isNotFound(err: unknown): boolean {
  const code = (err as { code?: string }).code;
  return code === "ENOENT" || code === "ENOTDIR";
}
