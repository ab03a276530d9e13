// The frames between the FUSE keeper (keeper.ts) and the process serving its mounts
// (keeper-link.ts), over a unix socket: a 9-byte header (payload length u32, type u8, mount id u32,
// little-endian), then the payload: JSON for the control frames, a kernel request or reply as it is
// on /dev/fuse for REQUEST and REPLY.

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

export interface FrameIn {
  type: number;
  id: number;
  payload: Buffer;
}

/** One frame; its payload is `payload` then `tail`, when given (a reply and the read bytes that follow it). */
export function encodeFrame(type: number, id: number, payload: Uint8Array = new Uint8Array(0), tail?: Uint8Array): Buffer {
  const length = payload.byteLength + (tail?.byteLength ?? 0);
  const out = Buffer.allocUnsafe(HEADER + length);
  out.writeUInt32LE(length, 0);
  out.writeUInt8(type, 4);
  out.writeUInt32LE(id, 5);
  out.set(payload, HEADER);
  if (tail) out.set(tail, HEADER + payload.byteLength);
  return out;
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
      if (this.#pending[0]!.length < HEADER) this.#pending = [Buffer.concat(this.#pending, this.#length)];
      const size = this.#pending[0]!.readUInt32LE(0);
      if (size > MAX_PAYLOAD) throw new Error(`frame of ${size} bytes`);
      if (this.#length < HEADER + size) break;
      // Joined only once the whole frame is here, so a big frame costs one copy, not one per chunk.
      const buf = this.#pending.length === 1 ? this.#pending[0]! : Buffer.concat(this.#pending, this.#length);
      frames.push({ type: buf.readUInt8(4), id: buf.readUInt32LE(5), payload: buf.subarray(HEADER, HEADER + size) });
      const rest = buf.subarray(HEADER + size);
      this.#pending = rest.length ? [rest] : [];
      this.#length = rest.length;
    }
    return frames;
  }
}
