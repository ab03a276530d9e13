// What the FUSE filesystem needs from below: the bytes of a regular file of the mounted image.
// Implementations: the lazy reader (chunk cache + fetches from the proxy) and, for tests and
// local use, a reader over a `skiff convert` output directory.

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
