// In-memory store for tests and ephemeral deployments.
import { concatBytes } from "../util/streams.ts";
import { assertValidKey, type ContentStore, type Upload } from "./store.ts";

export class MemoryStore implements ContentStore {
  readonly #objects = new Map<string, Uint8Array>();

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
        this.#objects.set(key, concatBytes(parts));
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
  }

  /** Number of stored objects (tests use it to prove nothing was published). */
  get size() {
    return this.#objects.size;
  }

  keys(): string[] {
    return [...this.#objects.keys()];
  }
}
