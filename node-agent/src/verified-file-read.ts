// Reads a chunk file and checks its sha256 on worker threads, so that neither the read nor the
// hash holds up the thread that answers FUSE requests. A warm sequential read is bound by that
// thread: read in place, each 1 MiB chunk cost it a sha256 (~1 ms) and five thread-pool round
// trips (open, fstat, two reads, close), and the mount served ~150 MB/s.
//
// The worker hashes the very bytes it read, in a slot of the chunk slab (chunk-slab.ts) that this
// read holds, or in a buffer of its own that it hands over (transferred, not copied) when no slot is
// free or the file is bigger than one: nothing can change them between the check and the answer, so
// what comes back verified is what was on disk at that moment, as when the cache checked in place.
import { Worker } from "node:worker_threads";
import { chunkSlab } from "./chunk-slab.ts";

/**
 * What a read found: the file's bytes, which hash to the name asked for (the caller holds them:
 * releaseChunk gives them back); bytes that don't; or no readable file.
 */
export type VerifiedRead = { status: "ok"; bytes: Uint8Array } | { status: "corrupt" } | { status: "missing" };

// Plain JavaScript, run with `eval`: the same source under the build (dist/) and under tests run
// from the TypeScript (a worker can't load a .ts file). The buffer is allocated for this file alone:
// a pooled Buffer (readFileSync's, for small files) would hand over memory other Buffers share.
const WORKER_SOURCE = `
const { parentPort, workerData } = require("node:worker_threads");
const { closeSync, fstatSync, openSync, readSync } = require("node:fs");
const { createHash } = require("node:crypto");
parentPort.on("message", ({ id, path, hex, at, capacity }) => {
  let bytes;
  let inSlab = false;
  try {
    const fd = openSync(path, "r");
    try {
      const size = fstatSync(fd).size;
      inSlab = size <= capacity;
      bytes = inSlab ? new Uint8Array(workerData.slab, at, size) : new Uint8Array(size);
      let n = 0;
      for (let r = 1; n < size && r > 0; n += r) r = readSync(fd, bytes, n, size - n, n);
      bytes = bytes.subarray(0, n);
    } finally {
      closeSync(fd);
    }
  } catch {
    return parentPort.postMessage({ id, status: "missing" });
  }
  if (createHash("sha256").update(bytes).digest("hex") !== hex) return parentPort.postMessage({ id, status: "corrupt" });
  if (inSlab) return parentPort.postMessage({ id, status: "ok", length: bytes.byteLength });
  parentPort.postMessage({ id, status: "ok", buffer: bytes.buffer, length: bytes.byteLength }, [bytes.buffer]);
});
`;

interface Reply {
  id: number;
  status: VerifiedRead["status"];
  /** Absent when the bytes are in the slot the read held. */
  buffer?: ArrayBuffer;
  length?: number;
}

/** One read owed: who waits, and the slab slot it reads into (if it got one). */
interface Owed {
  resolve: (r: VerifiedRead) => void;
  reject: (err: Error) => void;
  slot: number | undefined;
}

/** One worker and the reads it owes. It holds the process open only while it owes some. */
class ReadWorker {
  readonly #worker: Worker;
  readonly #pending = new Map<number, Owed>();
  #nextId = 0;
  #failed: Error | undefined;

  constructor() {
    // No inherited execArgv: a flag such as --input-type=module would make the source ESM, without require.
    this.#worker = new Worker(WORKER_SOURCE, { eval: true, execArgv: [], workerData: { slab: chunkSlab().buffer } });
    this.#worker.on("message", (m: Reply) => {
      const p = this.#pending.get(m.id);
      if (!p) return;
      this.#settled(m.id);
      if (m.status === "ok" && !m.buffer) return p.resolve({ status: "ok", bytes: chunkSlab().view(p.slot!, m.length!) });
      if (p.slot !== undefined) chunkSlab().releaseSlot(p.slot);
      p.resolve(m.status === "ok" ? { status: "ok", bytes: new Uint8Array(m.buffer!, 0, m.length) } : { status: m.status });
    });
    this.#worker.on("error", (err) => this.#fail(err));
    this.#worker.on("exit", (code) => this.#fail(new Error(`chunk read worker exited (${code})`)));
    // After the listeners: adding a "message" listener refs the worker's port again.
    this.#worker.unref();
  }

  get pending(): number {
    return this.#pending.size;
  }

  /** Whether it died: its reads failed, and a new one takes its place. */
  get failed(): boolean {
    return this.#failed !== undefined;
  }

  /** Reads into the slab's `slot` when given and the file fits (the read holds it until it settles). */
  read(path: string, hex: string, slot: number | undefined): Promise<VerifiedRead> {
    if (this.#failed) {
      if (slot !== undefined) chunkSlab().releaseSlot(slot);
      return Promise.reject(this.#failed);
    }
    const id = this.#nextId++;
    if (this.#pending.size === 0) this.#worker.ref();
    const slab = chunkSlab();
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject, slot });
      this.#worker.postMessage({ id, path, hex, at: slot === undefined ? 0 : slot * slab.slotBytes, capacity: slot === undefined ? -1 : slab.slotBytes });
    });
  }

  #settled(id: number): void {
    this.#pending.delete(id);
    if (this.#pending.size === 0) this.#worker.unref();
  }

  #fail(err: Error): void {
    this.#failed ??= err;
    for (const [id, p] of this.#pending) {
      this.#settled(id);
      // A worker that died mid-read may still be writing to the slot: it is not given back.
      p.reject(err);
    }
  }
}

/**
 * Workers shared by every cache in the process, started on first use. Four: a chunk file not in the
 * page cache costs a few dependent disk reads, so a sequential reader's readahead (8 chunks) keeps
 * several reading at once while others hash.
 */
const WORKERS = 4;
const workers: ReadWorker[] = [];

/**
 * Reads the file at `path` on a worker thread and checks that its sha256 is `hex`: into a slot of
 * the chunk slab when `size` (what the file should hold) fits one and a slot is free. Rejects only
 * when the worker itself failed (the next call starts a new one).
 */
export function readVerified(path: string, hex: string, size = Infinity): Promise<VerifiedRead> {
  for (let i = 0; i < WORKERS; i++) if (!workers[i] || workers[i]!.failed) workers[i] = new ReadWorker();
  // The one owing the fewest reads.
  const worker = workers.reduce((a, b) => (b.pending < a.pending ? b : a));
  return worker.read(path, hex, size <= chunkSlab().slotBytes ? chunkSlab().take() : undefined);
}
