// Where check-ranges keeps the full GET's bytes, the reference every range answer is compared with.
// Range bodies are compared as they stream in (never buffered), so the blob is held once: here.

export interface BodyStore {
  /** Bytes appended so far. */
  readonly size: number;
  append(chunk: Uint8Array): Promise<void>;
  /** Bytes [offset, offset + length), shorter at the end of what was appended. */
  read(offset: number, length: number): Promise<Uint8Array>;
  close(): Promise<void>;
}

export const DEFAULT_MEMORY_LIMIT = 1 << 30;

/**
 * One in-memory copy: preallocated when the size is known (no doubling while growing), else grown
 * by doubling. Refuses to go past `limit` (callers with bigger blobs pass a file-backed store).
 */
export function memoryStore(sizeHint: number | undefined, limit = DEFAULT_MEMORY_LIMIT): BodyStore {
  let buf = new Uint8Array(sizeHint !== undefined && sizeHint <= limit ? sizeHint : 64 * 1024);
  let size = 0;
  return {
    get size() {
      return size;
    },
    async append(chunk) {
      const need = size + chunk.length;
      if (need > limit) throw new Error(`blob larger than the ${limit}-byte in-memory limit`);
      if (need > buf.length) {
        const grown = new Uint8Array(Math.min(limit, Math.max(need, buf.length * 2)));
        grown.set(buf.subarray(0, size));
        buf = grown;
      }
      buf.set(chunk, size);
      size = need;
    },
    async read(offset, length) {
      return buf.subarray(Math.min(offset, size), Math.min(offset + length, size));
    },
    async close() {
      buf = new Uint8Array(0);
    },
  };
}
