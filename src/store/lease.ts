// Single flight across processes that share one store (Workers isolates on one R2 bucket): a small
// lease record created and renewed only by compare-and-swap, so at most one holder works on a thing
// at a time (a layer conversion, a blob fetched in steps). A lease runs out on its own, so a holder
// that vanished blocks nobody for long; a live holder renews it while it works and confirms it before each commit, and stops when it has lost it.
// A store that one process owns has no compare-and-swap: there the process's own single flight is
// the whole story and the lease is a formality.
import type { ContentStore } from "./store.ts";

export interface LeaseOptions {
  /** How long a lease lasts unless renewed. */
  ttlMs: number;
  now?: () => number;
}

interface LeaseRecord {
  holder: string;
  expires: number;
}

/** The lease was taken over (it had run out): the holder must not publish anything more. */
export class LeaseLost extends Error {}

export class Lease {
  readonly #store: ContentStore;
  readonly #key: string;
  readonly #holder = crypto.randomUUID();
  readonly #ttlMs: number;
  readonly #now: () => number;
  #version: string | null = null;
  #renewer: ReturnType<typeof setInterval> | undefined;
  /** Lost or released: nothing more may be published under it. */
  #ended = false;
  /** Renewals run one at a time: two at once would name the same version and one would fail. */
  #queue: Promise<unknown> = Promise.resolve();

  private constructor(store: ContentStore, key: string, o: LeaseOptions) {
    this.#store = store;
    this.#key = key;
    this.#ttlMs = o.ttlMs;
    this.#now = o.now ?? Date.now;
  }

  /** Takes the lease if nobody holds it (or the holder's ran out); null when someone else holds it. */
  static async acquire(store: ContentStore, key: string, o: LeaseOptions): Promise<Lease | null> {
    const lease = new Lease(store, key, o);
    if (!store.getVersioned || !store.putIfVersion) return lease;
    const current = await store.getVersioned(key);
    if (current) {
      const held = parseRecord(current.bytes);
      if (held && held.expires > lease.#now()) return null;
    }
    lease.#version = await store.putIfVersion(key, lease.#record(lease.#now() + o.ttlMs), current?.version ?? null);
    if (lease.#version === null) return null;
    // Renewed well before it runs out, for as long as the work goes on.
    lease.#renewer = setInterval(() => lease.confirm().catch(() => {}), Math.max(1, Math.floor(o.ttlMs / 3)));
    (lease.#renewer as { unref?: () => void }).unref?.(); // Node: a renewal alone keeps no process alive
    return lease;
  }

  /** Renews the lease, or throws LeaseLost when another holder has it now. */
  confirm(): Promise<void> {
    return this.#serial(async () => {
      if (this.#ended) throw new LeaseLost(`the lease ${this.#key} is no longer held`);
      if (this.#version === null || !this.#store.putIfVersion) return;
      const version = await this.#store.putIfVersion(this.#key, this.#record(this.#now() + this.#ttlMs), this.#version);
      if (version === null) {
        this.#end();
        throw new LeaseLost(`the lease ${this.#key} was taken over`);
      }
      this.#version = version;
    });
  }

  /** Gives the lease up (written as run out, so the next taker needn't wait), unless it was lost. */
  release(): Promise<void> {
    return this.#serial(async () => {
      if (this.#ended) return;
      this.#end();
      if (this.#version !== null) await this.#store.putIfVersion!(this.#key, this.#record(0), this.#version).catch(() => null);
    });
  }

  #end(): void {
    this.#ended = true;
    clearInterval(this.#renewer);
  }

  #serial<T>(op: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(op);
    this.#queue = run.catch(() => {});
    return run;
  }

  #record(expires: number): Uint8Array {
    const record: LeaseRecord = { holder: this.#holder, expires };
    return new TextEncoder().encode(JSON.stringify(record));
  }
}

function parseRecord(bytes: Uint8Array): LeaseRecord | null {
  try {
    const r = JSON.parse(new TextDecoder().decode(bytes)) as Partial<LeaseRecord>;
    return typeof r.holder === "string" && typeof r.expires === "number" ? (r as LeaseRecord) : null;
  } catch {
    return null; // unreadable: treated as run out, and replaced
  }
}
