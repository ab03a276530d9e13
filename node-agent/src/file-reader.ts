// What the FUSE filesystem needs from below: the bytes of a regular file of the mounted image.
// Implementations: the lazy reader (chunk cache + fetches from the proxy) and, for tests and
// local use, a reader over a `skiff convert` output directory.
import { withTimeout } from "./with-timeout.ts";

export interface FileReader {
  /**
   * Up to `length` bytes of regular file `inode` from `offset` (fewer only at end of file).
   * Rejects (the mount answers EIO) when the bytes can't be had or don't verify; never hangs past
   * the reader's timeout. The bytes may be a view of memory the reader keeps (a cached chunk):
   * callers copy them or send them, never write to them.
   */
  read(inode: number, offset: number, length: number): Promise<Uint8Array>;
  /**
   * The same bytes as `read`, in consecutive pieces that are views of what the reader keeps: a read
   * across two chunks is then sent as two pieces rather than joined into a new buffer (optional).
   * The pieces stay as they are until `release` is called, once they have been sent.
   */
  readPieces?(inode: number, offset: number, length: number): Promise<FilePieces>;
}

export interface FilePieces {
  pieces: Uint8Array[];
  release(): void;
}

/** Copies `pieces` one after another into `into`, as far as they fit; the bytes copied. */
export function copyPieces(pieces: readonly Uint8Array[], into: Uint8Array): number {
  let at = 0;
  for (const piece of pieces) {
    const take = Math.min(piece.byteLength, into.byteLength - at);
    into.set(piece.subarray(0, take), at);
    at += take;
  }
  return at;
}

/**
 * A read as pieces (one piece from a reader without readPieces) that fails after `timeoutMs`; the
 * pieces of a read that answers after that go straight back to the reader.
 */
export function readPiecesWithin(reader: FileReader, inode: number, offset: number, length: number, timeoutMs: number): Promise<FilePieces> {
  const read = reader.readPieces ? reader.readPieces(inode, offset, length) : reader.read(inode, offset, length).then((data) => ({ pieces: [data], release: () => {} }));
  let late = false;
  read.then(({ release }) => late && release(), () => {});
  return withTimeout(read, timeoutMs).catch((err: unknown) => {
    late = true;
    throw err;
  });
}
