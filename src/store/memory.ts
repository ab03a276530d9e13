// In-memory store for tests and ephemeral deployments.
import { concatBytes } from "../util/streams.ts";
import { assertValidKey, type ContentStore, type ListedObject, type Upload, type Versioned } from "./store.ts";

export class MemoryStore implements ContentStore {
  readonly #objects = new Map<string, Uint8Array>();
  /** Versions for compare-and-swap: every write of a key gets a new one. */
  readonly #versions = new Map<string, string>();
  #writes = 0;
  readonly #written = new Map<string, number>();

  async stat(key: string) {
    assertValidKey(key);
    const obj = this.#objects.get(key);
    return obj ? { size: obj.byteLength } : null;
  }

  async get(key: string, span?: { offset: number; length: number }) {
    assertValidKey(key);
    const obj = this.#objects.get(key);
    if (!obj) return null;
    const bytes = span ? obj.subarray(span.offset, span.offset + span.length) : obj;
    return new ReadableStream<Uint8Array>({
      start(controller) {
        if (bytes.byteLength > 0) controller.enqueue(bytes.slice());
        controller.close();
      },
    });
  }

  async put(key: string): Promise<Upload> {
    assertValidKey(key);
    const parts: Uint8Array[] = [];
    let state: "open" | "done" = "open";
    return {
      write: async (chunk) => {
        if (state !== "open") throw new Error("upload already finished");
        parts.push(chunk.slice());
      },
      commit: async () => {
        if (state !== "open") throw new Error("upload already finished");
        state = "done";
        this.#set(key, concatBytes(parts));
      },
      cancel: async () => {
        state = "done";
        parts.length = 0;
      },
    };
  }

  async delete(key: string) {
    assertValidKey(key);
    this.#objects.delete(key);
    this.#versions.delete(key);
    this.#written.delete(key);
  }

  async getVersioned(key: string): Promise<Versioned | null> {
    assertValidKey(key);
    const obj = this.#objects.get(key);
    return obj ? { bytes: obj.slice(), version: this.#versions.get(key)! } : null;
  }

  async putIfVersion(key: string, bytes: Uint8Array, expected: string | null): Promise<string | null> {
    assertValidKey(key);
    if ((this.#versions.get(key) ?? null) !== expected) return null;
    return this.#set(key, bytes.slice());
  }

  #set(key: string, bytes: Uint8Array): string {
    const version = String(++this.#writes);
    this.#objects.set(key, bytes);
    this.#versions.set(key, version);
    this.#written.set(key, Date.now());
    return version;
  }

  async *list(prefix = ""): AsyncIterable<ListedObject> {
    for (const [key, bytes] of this.#objects) if (key.startsWith(prefix)) yield { key, size: bytes.byteLength, modifiedMs: this.#written.get(key) ?? 0 };
  }

  /** Number of stored objects (tests use it to prove nothing was published). */
  get size() {
    return this.#objects.size;
  }

  keys(): string[] {
    return [...this.#objects.keys()];
  }
}
