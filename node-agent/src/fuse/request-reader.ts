// Reads a FUSE connection's requests, one request per read(2) of its /dev/fuse descriptor.
//
// On the event loop where Node lets us: libuv's pipe handle polls the descriptor (epoll) as it
// would a socket's, so a connection costs no thread, and a request reaches JavaScript without a
// hop through the thread pool. The handle comes from `process.binding("pipe_wrap")`, Node's own
// binding (net.Socket refuses a character device). Where that binding is missing (another
// runtime, a future Node), each connection keeps one blocking read on the thread pool instead, and
// the process then needs a pool thread per connection (UV_THREADPOOL_SIZE).
import { close, read } from "node:fs";

/** A connection being read; `close` stops reading and closes the descriptor (once). */
export interface RequestReader {
  close(): Promise<void>;
}

/** Big enough for any request a read-only mount gets (the kernel wants at least 8 KiB). */
const READ_BUFFER = 64 << 10;
/** A request interrupted before it was read (ENOENT), or a read to try again: not the end. */
const RETRY = new Set(["ENOENT", "EINTR", "EAGAIN"]);
/** The connection has ended: unmounted (ENODEV), aborted, or closed by us (EBADF). */
const ENDED = new Set(["ENODEV", "ECONNABORTED", "EBADF"]);

interface PipeHandle {
  open(fd: number): number;
  readStart(): number;
  close(callback?: () => void): void;
  onread: (buffer: ArrayBuffer | undefined) => void;
}

interface LoopBindings {
  newPipe(): PipeHandle;
  /** The byte count or (negative) libuv error of the read just reported to `onread`. */
  lastRead(): { n: number; offset: number };
  errorName(code: number): string;
}

const loop = loopBindings();

/** Whether requests are read on the event loop (true) or on the thread pool (a thread per connection). */
export const readsOnEventLoop = loop !== undefined;

/**
 * Reads the connection's requests into `onRequest` (each its own bytes), until the connection ends
 * (unmounted or aborted): then `onEnd`, with an error unless it ended as connections do. `on` picks
 * the way (tests try both); by default the event loop where it can.
 */
export function readRequests(
  fd: number,
  onRequest: (req: Uint8Array) => void,
  onEnd: (err?: Error) => void,
  on: "loop" | "pool" = loop ? "loop" : "pool",
): RequestReader {
  if (on === "pool") return readOnPool(fd, onRequest, onEnd);
  if (!loop) throw new Error("this runtime has no pipe binding to read /dev/fuse on the event loop");
  return readOnLoop(loop, fd, onRequest, onEnd);
}

function readOnLoop(b: LoopBindings, fd: number, onRequest: (req: Uint8Array) => void, onEnd: (err?: Error) => void): RequestReader {
  let ended = false;
  let closed: Promise<void> | undefined;
  /** The handle that owns the descriptor now (closing it closes the descriptor); none if opening failed. */
  let pipe: PipeHandle | undefined;
  // Reported after readRequests has returned, whenever the end comes: its caller holds the reader by then.
  const end = (err?: Error) => {
    if (!ended) (ended = true), queueMicrotask(() => onEnd(err));
  };
  const start = () => {
    const next = b.newPipe();
    const opened = next.open(fd);
    if (opened !== 0) {
      pipe = undefined;
      return end(new Error(`reading /dev/fuse: ${b.errorName(opened)}`));
    }
    pipe = next;
    next.onread = (buffer) => {
      const { n, offset } = b.lastRead();
      if (n > 0 && buffer) return onRequest(new Uint8Array(buffer, offset, n));
      if (n === 0 || closed) return;
      const name = b.errorName(n);
      if (ENDED.has(name) || name === "EOF") return end();
      if (!RETRY.has(name)) return end(new Error(`reading /dev/fuse: ${name}`));
      // libuv stops reading a stream after an error and won't start it again. The stopped handle
      // is left as it is (closing it would close the descriptor); a new one reads on.
      start();
    };
    const started = next.readStart();
    if (started !== 0) end(new Error(`reading /dev/fuse: ${b.errorName(started)}`));
  };
  start();
  return {
    close: () =>
      (closed ??= new Promise<void>((resolve) => {
        end();
        if (pipe) pipe.close(resolve);
        else close(fd, () => resolve());
      })),
  };
}

function readOnPool(fd: number, onRequest: (req: Uint8Array) => void, onEnd: (err?: Error) => void): RequestReader {
  const buf = Buffer.allocUnsafe(READ_BUFFER);
  let closed: Promise<void> | undefined;
  const next = () =>
    read(fd, buf, 0, buf.length, null, (err, n) => {
      if (err) {
        if (RETRY.has(err.code ?? "") && !closed) return next();
        return onEnd(ENDED.has(err.code ?? "") ? undefined : err);
      }
      if (n === 0) return onEnd();
      onRequest(Uint8Array.prototype.slice.call(buf, 0, n));
      next();
    });
  next();
  return { close: () => (closed ??= new Promise((resolve) => close(fd, () => resolve()))) };
}

/** Node's pipe and stream bindings, checked for what readOnLoop uses; undefined where absent. */
function loopBindings(): LoopBindings | undefined {
  try {
    const binding = (process as unknown as { binding?: (name: string) => Record<string, unknown> }).binding;
    if (typeof binding !== "function") return undefined;
    const pipeWrap = binding("pipe_wrap") as { Pipe?: new (type: number) => PipeHandle; constants?: { SOCKET?: number } };
    const streamWrap = binding("stream_wrap") as { streamBaseState?: Int32Array; kReadBytesOrError?: number; kArrayBufferOffset?: number };
    const uv = binding("uv") as { errname?: (code: number) => string };
    const { Pipe, constants } = pipeWrap;
    const { streamBaseState: state, kReadBytesOrError: nAt, kArrayBufferOffset: offsetAt } = streamWrap;
    if (typeof Pipe !== "function" || typeof constants?.SOCKET !== "number" || !(state instanceof Int32Array)) return undefined;
    if (typeof nAt !== "number" || typeof offsetAt !== "number" || typeof uv.errname !== "function") return undefined;
    const socketType = constants.SOCKET;
    const errname = uv.errname;
    return {
      newPipe: () => new Pipe(socketType),
      lastRead: () => ({ n: state[nAt]!, offset: state[offsetAt]! }),
      errorName: (code) => errname(code),
    };
  } catch {
    return undefined;
  }
}
