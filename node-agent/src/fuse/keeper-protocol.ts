// The frames between the FUSE keeper (keeper.ts) and the process serving its mounts
// (keeper-link.ts), over a unix socket: a 9-byte header (payload length u32, type u8, mount id u32,
// little-endian), then the payload: JSON for the control frames, a kernel request or reply as it is
// on /dev/fuse for REQUEST and REPLY.
import type { Socket } from "node:net";

export const Frame = {
  /** keeper → server, first frame: JSON `{ mounts: [{ id, mountpoint }] }`, the mounts it holds. */
  HELLO: 1,
  /** server → keeper: JSON `{ mountpoint }`; mount id chosen by the server. */
  MOUNT: 2,
  /** keeper → server: the mount is up (its INIT request follows as a REQUEST). */
  MOUNTED: 3,
  /** keeper → server: JSON `{ error }`. */
  MOUNT_FAILED: 4,
  /** server → keeper: unmount and close. */
  UNMOUNT: 5,
  /** keeper → server. */
  UNMOUNTED: 6,
  /** keeper → server: a kernel request. */
  REQUEST: 7,
  /** server → keeper: a kernel reply. */
  REPLY: 8,
  /** keeper → server: the mount ended without being asked (unmounted from outside). */
  GONE: 9,
  /** server → keeper: ready to answer the held mounts; the keeper sends what waited meanwhile. */
  READY: 10,
} as const;

const HEADER = 9;
/** Far above any request or reply (1 MiB reads): a bigger length means a broken stream. */
const MAX_PAYLOAD = 4 << 20;

/** A frame read. */
export class FrameIn {
  #payload: Buffer | undefined;

  constructor(
    readonly type: number,
    readonly id: number,
    /** The payload in the pieces the socket gave it in: a 1 MiB reply is written on as it is, never joined. */
    readonly parts: Buffer[],
  ) {}

  /** The payload in one buffer (joined on first use, when it came in pieces). */
  get payload(): Buffer {
    return (this.#payload ??= this.parts.length === 1 ? this.parts[0]! : Buffer.concat(this.parts));
  }
}

/** One whole frame (the control frames; requests and replies go through FrameWriter). */
export function encodeFrame(type: number, id: number, payload: Uint8Array = new Uint8Array(0)): Buffer {
  return frameHead(type, id, payload, 0);
}

/** The header and `payload` of a frame whose payload goes on with `tailLength` more bytes, sent apart. */
function frameHead(type: number, id: number, payload: Uint8Array, tailLength: number): Buffer {
  const out = Buffer.allocUnsafe(HEADER + payload.byteLength);
  out.writeUInt32LE(payload.byteLength + tailLength, 0);
  out.writeUInt8(type, 4);
  out.writeUInt32LE(id, 5);
  out.set(payload, HEADER);
  return out;
}

/**
 * Sends frames on a socket, those of one turn of the event loop in one write: requests read from
 * several mounts in the same turn, or replies made in the same turn, cost one system call (and one
 * wakeup of the other side) rather than one each. A frame waits at most until the end of the turn
 * (setImmediate runs right after the turn's I/O callbacks), so a lone request is not delayed.
 */
export class FrameWriter {
  readonly #socket: Socket;
  #corked = false;

  constructor(socket: Socket) {
    this.#socket = socket;
  }

  /**
   * `tail` (a read's bytes, up to 1 MiB, in pieces) is written as it is, not copied into the frame;
   * `written` once the socket no longer needs it (written, or failed).
   */
  send(type: number, id: number, payload: Uint8Array = new Uint8Array(0), tail: readonly Uint8Array[] = [], written?: () => void): void {
    if (this.#socket.destroyed) return written?.();
    if (!this.#corked) {
      this.#corked = true;
      this.#socket.cork();
      setImmediate(this.#uncork);
    }
    const pieces = [frameHead(type, id, payload, tail.reduce((n, piece) => n + piece.byteLength, 0)), ...tail.filter((piece) => piece.byteLength > 0)];
    // A write's callback comes once it is flushed, or with the error that ends the socket.
    pieces.forEach((piece, i) => this.#socket.write(piece, i === pieces.length - 1 && written ? () => written() : undefined));
  }

  readonly #uncork = () => {
    this.#corked = false;
    this.#socket.uncork();
  };
}

export const jsonFrame = (type: number, id: number, value: unknown) => encodeFrame(type, id, Buffer.from(JSON.stringify(value)));

/** Cuts a byte stream into frames. */
export class FrameReader {
  #pending: Buffer[] = [];
  #length = 0;

  /** The frames completed by `chunk`; throws on a stream that can't be frames. */
  push(chunk: Buffer): FrameIn[] {
    this.#pending.push(chunk);
    this.#length += chunk.length;
    const frames: FrameIn[] = [];
    while (this.#length >= HEADER) {
      // A header cut between chunks: join just the chunks that hold it.
      while (this.#pending[0]!.length < HEADER) this.#pending.splice(0, 2, Buffer.concat(this.#pending.slice(0, 2)));
      const head = this.#pending[0]!;
      const size = head.readUInt32LE(0);
      if (size > MAX_PAYLOAD) throw new Error(`frame of ${size} bytes`);
      if (this.#length < HEADER + size) break;
      const parts = this.#take(HEADER + size);
      parts[0] = parts[0]!.subarray(HEADER);
      if (parts[0].length === 0 && parts.length > 1) parts.shift();
      frames.push(new FrameIn(head.readUInt8(4), head.readUInt32LE(5), parts));
    }
    return frames;
  }

  /** The first `n` bytes of what is pending, as views of the chunks that hold them (no copy). */
  #take(n: number): Buffer[] {
    const parts: Buffer[] = [];
    this.#length -= n;
    while (n > 0) {
      const first = this.#pending[0]!;
      if (first.length <= n) {
        parts.push(first);
        this.#pending.shift();
        n -= first.length;
      } else {
        parts.push(first.subarray(0, n));
        this.#pending[0] = first.subarray(n);
        n = 0;
      }
    }
    return parts;
  }
}
