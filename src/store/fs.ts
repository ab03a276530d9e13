// Filesystem store: one file per key under a root directory. Writes go to a temporary file in the
// same filesystem and are renamed into place on commit, which is atomic on POSIX.
import { mkdir, open, rename, rm, stat, unlink, type FileHandle } from "node:fs/promises";
import { dirname, join } from "node:path";
import { assertValidKey, type ByteSpan, type ContentStore, type Upload } from "./store.ts";

const READ_SIZE = 256 * 1024;

export class FsStore implements ContentStore {
  readonly root: string;
  readonly #tmp: string;

  constructor(root: string) {
    this.root = root;
    this.#tmp = join(root, ".tmp");
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
    let fh: FileHandle;
    try {
      fh = await open(this.#path(key), "r");
    } catch (err) {
      if (isNotFound(err)) return null;
      throw err;
    }
    const size = (await fh.stat()).size;
    let position = span ? span.offset : 0;
    const end = span ? Math.min(size, span.offset + span.length) : size;
    return new ReadableStream<Uint8Array>({
      type: "bytes",
      async pull(controller) {
        try {
          const want = Math.min(READ_SIZE, end - position);
          if (want <= 0) {
            await fh.close();
            controller.close();
            return;
          }
          const buf = new Uint8Array(want);
          const { bytesRead } = await fh.read(buf, 0, want, position);
          if (bytesRead === 0) throw new Error(`store object ${key} shorter than expected`);
          position += bytesRead;
          controller.enqueue(buf.subarray(0, bytesRead));
        } catch (err) {
          await fh.close().catch(() => {});
          controller.error(err);
        }
      },
      async cancel() {
        await fh.close().catch(() => {});
      },
    });
  }

  async put(key: string): Promise<Upload> {
    const finalPath = this.#path(key);
    const tmpPath = join(this.#tmp, `${Date.now().toString(36)}-${crypto.randomUUID()}`);
    const fh = await open(tmpPath, "wx");
    let finished = false;
    const discard = async () => {
      if (finished) return;
      finished = true;
      await fh.close().catch(() => {});
      await unlink(tmpPath).catch(() => {});
    };
    return {
      write: async (chunk) => {
        if (finished) throw new Error("upload already finished");
        let at = 0;
        while (at < chunk.byteLength) {
          const { bytesWritten } = await fh.write(chunk, at, chunk.byteLength - at);
          at += bytesWritten;
        }
      },
      commit: async () => {
        if (finished) throw new Error("upload already finished");
        try {
          await fh.sync();
          await fh.close();
          await mkdir(dirname(finalPath), { recursive: true });
          await rename(tmpPath, finalPath);
          finished = true;
        } catch (err) {
          await discard();
          throw err;
        }
      },
      cancel: discard,
    };
  }

  async delete(key: string) {
    await rm(this.#path(key), { force: true });
  }
}

function isNotFound(err: unknown): boolean {
  const code = (err as { code?: string }).code;
  return code === "ENOENT" || code === "ENOTDIR";
}
