// The serving process's side of the FUSE keeper (keeper.ts): finds the keeper on its socket or
// starts one, learns which mounts it already holds, asks it to mount and unmount, and gets the
// kernel's requests of every mount through it and answers them.
import { connect, type Socket } from "node:net";
import { errorMessage } from "../../../src/util/error-message.ts";
import { encodeFrame, Frame, FrameReader, FrameWriter, jsonFrame, type FrameIn } from "./keeper-protocol.ts";

export interface HeldMount {
  id: number;
  mountpoint: string;
}

export interface KeeperLinkOptions {
  socket: string;
  /** Starts a keeper; called when none answers on the socket. Without it, no answer is an error. */
  startKeeper?: () => void;
  onRequest: (id: number, req: Uint8Array) => void;
  /** A mount ended without being asked to (unmounted from outside). */
  onGone: (id: number) => void;
  /** The keeper went away: every mount it held is dead. Not called after close(). */
  onLost: () => void;
}

const CONNECT_TIMEOUT_MS = 15_000;
const CONNECT_RETRY_MS = 100;

/** Nothing listens on a unix socket: the process that should (a keeper, a daemon) doesn't run. */
export const isAbsent = (err: unknown) => ["ECONNREFUSED", "ENOENT"].includes((err as NodeJS.ErrnoException).code ?? "");

export class KeeperLink {
  /** The mounts the keeper held when this link attached. */
  readonly held: HeldMount[];
  readonly #socket: Socket;
  readonly #replies: FrameWriter;
  readonly #waiting = new Map<string, { resolve: () => void; reject: (err: Error) => void }>();
  #closed = false;

  private constructor(socket: Socket, held: HeldMount[]) {
    this.#socket = socket;
    this.#replies = new FrameWriter(socket);
    this.held = held;
  }

  static async connect(o: KeeperLinkOptions): Promise<KeeperLink> {
    const socket = await connectOrStart(o);
    const frames = new FrameReader();
    let link: KeeperLink | undefined;
    return new Promise<KeeperLink>((resolve, reject) => {
      const onFrame = (f: FrameIn) => {
        if (f.type === Frame.HELLO && !link) {
          link = new KeeperLink(socket, (JSON.parse(f.payload.toString()) as { mounts: HeldMount[] }).mounts);
          return resolve(link);
        }
        if (!link) return;
        if (f.type === Frame.REQUEST) return o.onRequest(f.id, f.payload);
        if (f.type === Frame.GONE) return o.onGone(f.id);
        link.#settle(f);
      };
      socket.on("data", (chunk: Buffer) => {
        try {
          for (const f of frames.push(chunk)) onFrame(f);
        } catch (err) {
          socket.destroy(err as Error);
        }
      });
      socket.on("error", () => {});
      socket.on("close", () => {
        if (!link) return reject(new Error("the FUSE keeper closed the connection before greeting"));
        for (const w of link.#waiting.values()) w.reject(new Error("the FUSE keeper went away"));
        link.#waiting.clear();
        if (!link.#closed) o.onLost();
      });
    });
  }

  /** Mounts a new connection at `mountpoint` under `id`; its requests come to onRequest. */
  mount(id: number, mountpoint: string): Promise<void> {
    return this.#ask(`mount ${id}`, jsonFrame(Frame.MOUNT, id, { mountpoint }));
  }

  unmount(id: number): Promise<void> {
    return this.#ask(`unmount ${id}`, jsonFrame(Frame.UNMOUNT, id, {}));
  }

  /** Says that the held mounts are served now: the requests they got meanwhile come. */
  ready(): void {
    this.#socket.write(encodeFrame(Frame.READY, 0));
  }

  /**
   * Passes a reply (and the body that follows it, if any) to the keeper, which writes it to the
   * kernel; `sent` once the body is out of this process (or could not be sent).
   */
  reply(id: number, reply: Uint8Array, body?: readonly Uint8Array[], sent?: () => void): void {
    this.#replies.send(Frame.REPLY, id, reply, body, sent);
  }

  /** Detaches; the keeper keeps the mounts for the next server. */
  close(): void {
    this.#closed = true;
    this.#socket.end();
  }

  #ask(key: string, frame: Buffer): Promise<void> {
    if (this.#socket.destroyed) return Promise.reject(new Error("the FUSE keeper went away"));
    return new Promise((resolve, reject) => {
      this.#waiting.set(key, { resolve, reject });
      this.#socket.write(frame);
    });
  }

  #settle(f: FrameIn): void {
    const key = f.type === Frame.UNMOUNTED ? `unmount ${f.id}` : `mount ${f.id}`;
    const w = this.#waiting.get(key);
    if (!w) return;
    this.#waiting.delete(key);
    if (f.type === Frame.MOUNT_FAILED) w.reject(new Error((JSON.parse(f.payload.toString()) as { error: string }).error));
    else w.resolve();
  }
}

async function connectOrStart(o: KeeperLinkOptions): Promise<Socket> {
  let started = false;
  const deadline = Date.now() + CONNECT_TIMEOUT_MS;
  for (;;) {
    try {
      return await new Promise<Socket>((resolve, reject) => {
        const socket = connect(o.socket);
        socket.once("connect", () => {
          socket.off("error", reject);
          resolve(socket);
        });
        socket.once("error", reject);
      });
    } catch (err) {
      if (!isAbsent(err) || !o.startKeeper) throw err;
      if (!started) {
        started = true;
        o.startKeeper();
      }
      if (Date.now() > deadline) throw new Error(`no FUSE keeper answered on ${o.socket} within ${CONNECT_TIMEOUT_MS / 1000} s: ${errorMessage(err)}`);
      await new Promise((r) => setTimeout(r, CONNECT_RETRY_MS));
    }
  }
}
