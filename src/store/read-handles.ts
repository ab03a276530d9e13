// Open file handles for reading, kept between reads: a range request for a cached blob would
// otherwise pay open + fstat + close on top of its one read, each a hop through libuv's thread pool.
// A handle is shared by concurrent readers and closed once it is both evicted (least recently used
// beyond the limit, or its path replaced or deleted by this process) and no longer read. Plain
// descriptors, not FileHandle objects: a store dropped with handles open (a CLI command's) must not
// leave Node closing them on garbage collection, which it warns about on stderr.
import { close, fstat, open } from "node:fs";
import { promisify } from "node:util";

const openFd = promisify(open);
const fstatFd = promisify(fstat);
const closeFd = promisify(close);

export interface ReadHandle {
  readonly fd: number;
  readonly size: number;
  /** Every acquire is matched by exactly one release. */
  release(): void;
}

interface Entry {
  fd: number;
  size: number;
  readers: number;
  /** No longer handed out: closed when its last reader releases it. */
  retired: boolean;
}

export class ReadHandles {
  readonly #limit: number;
  readonly #open = new Map<string, Promise<Entry>>();

  constructor(limit = 256) {
    this.#limit = limit;
  }

  /** A handle on the file at `path` as it is now; rejects with ENOENT when there is none. */
  async acquire(path: string): Promise<ReadHandle> {
    let pending = this.#open.get(path);
    if (pending) {
      this.#open.delete(path); // re-inserted below: most recently used last
    } else {
      pending = openEntry(path);
      pending.catch(() => this.#open.get(path) === pending && this.#open.delete(path));
    }
    this.#open.set(path, pending);
    this.#evictBeyondLimit();
    const entry = await pending;
    entry.readers++;
    let released = false;
    return {
      fd: entry.fd,
      size: entry.size,
      release: () => {
        if (released) return;
        released = true;
        entry.readers--;
        closeIfIdle(entry);
      },
    };
  }

  /** The file at `path` was replaced or deleted: readers from now on open it afresh. */
  forget(path: string): void {
    const pending = this.#open.get(path);
    if (!pending) return;
    this.#open.delete(path);
    retire(pending);
  }

  #evictBeyondLimit(): void {
    while (this.#open.size > this.#limit) {
      const [oldest, pending] = this.#open.entries().next().value!;
      this.#open.delete(oldest);
      retire(pending);
    }
  }
}

async function openEntry(path: string): Promise<Entry> {
  const fd = await openFd(path, "r");
  try {
    return { fd, size: (await fstatFd(fd)).size, readers: 0, retired: false };
  } catch (err) {
    await closeFd(fd).catch(() => {});
    throw err;
  }
}

function retire(pending: Promise<Entry>): void {
  pending.then(
    (entry) => {
      entry.retired = true;
      closeIfIdle(entry);
    },
    () => {},
  );
}

function closeIfIdle(entry: Entry): void {
  if (entry.retired && entry.readers === 0) void closeFd(entry.fd).catch(() => {});
}
