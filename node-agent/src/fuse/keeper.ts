// The FUSE keeper: a small process that holds the /dev/fuse connections of the node's lazy mounts
// and relays the kernel's requests to the process that serves them (the mounts daemon, through
// keeper-link.ts), which does everything that can fail: bootstraps, cache, fetches.
//
// When that process dies, the connections stay up here, so a container keeps its mounts: requests
// wait for the next server, which gets them again when it attaches; one that waited longer than
// the read timeout gets EIO from the keeper instead, so that no read hangs. The keeper also fails a
// request its server has left unanswered for the timeout plus a second.
//
// It does no parsing beyond the request header and has no state but the connections, so there is
// little in it to fail. If it is killed, its mounts end (ENOTCONN), as any FUSE server's would.
//
// On a kernel that can queue again what a dead server had read (dev-fuse.ts, kernelResends), the
// mounts daemon reads its connections itself, with no hop through a keeper, and hands copies of
// them down to a holder it starts (fuse/connection-holder.ts), which becomes a keeper only if the
// daemon goes: it then takes them over, has the kernel queue again what the daemon had left
// unanswered, and relays them to the next daemon as above.
import { createServer, type Socket } from "node:net";
import { constants } from "node:os";
import { rm } from "node:fs/promises";
import { join } from "node:path";
import { errorMessage } from "../../../src/util/error-message.ts";
import { closeDevFuse, mountDevFuse, resendUnanswered, unmountDevFuse, writeReply, writeReplyParts } from "./dev-fuse.ts";
import { errorReply, OUT_HEADER_SIZE, requestOpcode, requestUnique, replyUnique, UNANSWERED_OPS } from "./kernel-abi.ts";
import { Frame, FrameReader, FrameWriter, jsonFrame, type FrameIn } from "./keeper-protocol.ts";
import { readRequests, readsOnEventLoop, type RequestReader } from "./request-reader.ts";

/** Where the keeper of a snapshotter root listens (the one that mounts for the daemon). */
export const keeperSocketIn = (root: string) => join(root, "fuse-keeper.sock");
/** Where a keeper that took over a daemon's own connections listens: one per keeper. */
export const takenOverSocketIn = (root: string, pid: number) => join(root, `fuse-keeper-${pid}.sock`);
/** Every keeper socket of a root: the mounting keeper's and those of keepers that took over. */
export const isKeeperSocket = (name: string) => /^fuse-keeper(-\d+)?\.sock$/.test(name);

/** A connection the serving process handed down to the keeper it started: inherited as `fd`. */
export interface HandedDown {
  id: number;
  mountpoint: string;
  fd: number;
}

export interface KeeperOptions {
  socket: string;
  /** A request nobody answers for this long fails with EIO. */
  timeoutMs: number;
  log: (message: string) => void;
  /**
   * Connections the serving process reads itself: the keeper holds them without reading until
   * `takeOver` settles. True: that process has gone and this keeper is the one to hold its
   * connections; it has the kernel queue again what was left unanswered, then holds and relays
   * them like its own, listening on `socket`. False: a newer keeper holds them; this one ends.
   * `stopAtOnce`: stopped before it took over (a node shutting down): unmounts them and ends.
   */
  handedDown?: { connections: HandedDown[]; takeOver: Promise<boolean>; stopAtOnce?: boolean };
}

interface Held {
  mountpoint: string;
  fd: number;
  requests?: RequestReader;
  /** Requests sent to no server yet or not answered yet, in arrival order, with when they came. */
  pending: Map<bigint, { req: Uint8Array; at: number }>;
  unmounting: boolean;
}

const { EIO } = constants.errno;
/** How long a server that is attached gets beyond the timeout (it enforces the timeout itself). */
const SERVER_GRACE_MS = 1_000;
const SWEEP_MS = 250;
/** The most mounts one keeper holds. */
const MAX_MOUNTS = 1016;
/**
 * The keeper's thread pool (UV_THREADPOOL_SIZE, set by whoever starts it). Where requests are read
 * on the thread pool, each mount keeps a thread there (libuv's most is 1,024). Otherwise libuv's
 * default: a process with 1,000 threads more takes 150 ms to fork each mount(8).
 */
export const KEEPER_THREADS = readsOnEventLoop ? 4 : MAX_MOUNTS + 8;

export interface RunningKeeper {
  /** Unmounts everything and stops. */
  close(): Promise<void>;
  /** Settles when the keeper has stopped, or has nothing left to hold and no server. */
  finished: Promise<void>;
}

export async function runKeeper(o: KeeperOptions): Promise<RunningKeeper> {
  const held = new Map<number, Held>();
  let server: Socket | undefined;
  let writer: FrameWriter | undefined;
  // Requests go to the server once it has said READY (it serves the held mounts by then).
  let ready = false;
  let stopping = false;
  let exitWhenIdle = () => {};

  const send = (frame: Buffer) => server?.write(frame);
  const sendRequest = (id: number, req: Uint8Array) => {
    if (ready) writer?.send(Frame.REQUEST, id, req);
  };

  const onRequest = (id: number, req: Uint8Array) => {
    const h = held.get(id);
    if (!h || UNANSWERED_OPS.has(requestOpcode(req))) return;
    // Stopping with no server to answer: nobody will (and the unmount must not wait on it).
    if (stopping && !ready) return void writeReply(h.fd, errorReply(requestUnique(req), EIO));
    h.pending.set(requestUnique(req), { req, at: Date.now() });
    sendRequest(id, req);
  };

  const release = async (id: number, h: Held) => {
    held.delete(id);
    await h.requests?.close();
  };

  /** Unmounts a held mount on purpose (its connection's end is then no news) and lets it go. */
  const unmountHeld = async (id: number, h: Held) => {
    h.unmounting = true;
    await unmountDevFuse(h.mountpoint).catch((err) => o.log(`unmounting ${h.mountpoint}: ${errorMessage(err)}`));
    await release(id, h);
  };

  const startHolding = (id: number, h: Held) => {
    held.set(id, h);
    h.requests = readRequests(
      h.fd,
      (req) => onRequest(id, req),
      (err) => {
        if (h.unmounting || held.get(id) !== h) return;
        if (err) o.log(`${h.mountpoint}: ${errorMessage(err)}`);
        void release(id, h).then(() => {
          send(jsonFrame(Frame.GONE, id, { mountpoint: h.mountpoint }));
          exitWhenIdle();
        });
      },
    );
  };

  const onReply = (f: FrameIn) => {
    const h = held.get(f.id);
    // The unique is in the reply's 16-byte header, nearly always within the first piece.
    const head = f.parts[0]!.length >= OUT_HEADER_SIZE ? f.parts[0]! : f.payload;
    // Not a reply: dropped (reading its unique would throw, and end the keeper with its mounts).
    if (head.length < OUT_HEADER_SIZE) return o.log(`a reply of ${head.length} bytes for mount ${f.id}`);
    const unique = replyUnique(head);
    // Dropped if the keeper has already failed the request: the kernel has forgotten it.
    if (h && h.pending.delete(unique)) writeReplyParts(h.fd, f.parts);
  };

  const onFrame = async (socket: Socket, f: FrameIn) => {
    if (f.type === Frame.READY) {
      ready = true;
      // What the last server left unanswered, and what came meanwhile, goes to this one.
      for (const [id, h] of held) for (const { req } of h.pending.values()) sendRequest(id, req);
      return;
    }
    if (f.type === Frame.MOUNT) {
      const { mountpoint } = JSON.parse(f.payload.toString()) as { mountpoint: string };
      try {
        if (held.has(f.id)) throw new Error(`mount id ${f.id} is in use`);
        if (held.size >= MAX_MOUNTS) throw new Error(`the keeper holds ${held.size} mounts, its most`);
        const fd = await mountDevFuse(mountpoint);
        startHolding(f.id, { mountpoint, fd, pending: new Map(), unmounting: false });
        socket.write(jsonFrame(Frame.MOUNTED, f.id, { mountpoint }));
      } catch (err) {
        socket.write(jsonFrame(Frame.MOUNT_FAILED, f.id, { error: errorMessage(err) }));
      }
      return;
    }
    if (f.type === Frame.UNMOUNT) {
      const h = held.get(f.id);
      if (h) await unmountHeld(f.id, h);
      socket.write(jsonFrame(Frame.UNMOUNTED, f.id, {}));
      exitWhenIdle();
      return;
    }
    o.log(`unknown frame type ${f.type}`);
  };

  const attach = (socket: Socket) => {
    // One server at a time: a new one means the old one is gone (or about to be).
    server?.destroy();
    server = socket;
    writer = new FrameWriter(socket);
    ready = false;
    socket.write(jsonFrame(Frame.HELLO, 0, { mounts: [...held].map(([id, h]) => ({ id, mountpoint: h.mountpoint })) }));
    const frames = new FrameReader();
    let queue = Promise.resolve();
    socket.on("data", (chunk: Buffer) => {
      let list: FrameIn[];
      try {
        list = frames.push(chunk);
      } catch (err) {
        o.log(`server stream: ${errorMessage(err)}`);
        return socket.destroy();
      }
      for (const f of list) {
        // Replies at once; mounts and unmounts one after another, in order.
        if (f.type === Frame.REPLY) onReply(f);
        else queue = queue.then(() => onFrame(socket, f)).catch((err) => o.log(errorMessage(err)));
      }
    });
    socket.on("error", () => {});
    socket.on("close", () => {
      if (server === socket) {
        server = undefined;
        writer = undefined;
        ready = false;
      }
      exitWhenIdle();
    });
  };

  // Fail what has waited too long: the read bound holds for the program, whoever is (not) serving.
  const sweep = setInterval(() => {
    const limit = Date.now() - o.timeoutMs - (ready ? SERVER_GRACE_MS : 0);
    for (const h of held.values()) {
      for (const [unique, { at }] of h.pending) {
        if (at > limit) break; // in arrival order
        h.pending.delete(unique);
        writeReply(h.fd, errorReply(unique, EIO));
      }
    }
  }, SWEEP_MS);

  const listener = createServer(attach);
  const listen = async () => {
    await rm(o.socket, { force: true });
    await new Promise<void>((resolve, reject) => {
      listener.once("error", reject);
      listener.listen(o.socket, () => resolve());
    });
    o.log(`fuse keeper ${process.pid} listening on ${o.socket}`);
  };

  let stopped = () => {};
  const finished = new Promise<void>((resolve) => (stopped = resolve));
  // Handed down and not taken over (yet): held without reading.
  const waiting = o.handedDown?.connections.slice() ?? [];
  const close = async () => {
    if (stopping) return finished;
    stopping = true;
    listener.close();
    server?.destroy();
    ready = false;
    // What waits now waits in vain: fail it, so that nothing (the unmount included) hangs on it.
    for (const h of held.values()) for (const unique of h.pending.keys()) writeReply(h.fd, errorReply(unique, EIO));
    for (const [id, h] of [...held]) await unmountHeld(id, h);
    // Stopped while the daemon still serves them (a node shutdown stops both): they go too.
    for (const c of waiting.splice(0)) await unmountDevFuse(c.mountpoint).catch((err) => o.log(`unmounting ${c.mountpoint}: ${errorMessage(err)}`));
    clearInterval(sweep);
    stopped();
  };

  if (!o.handedDown) await listen();
  else if (o.handedDown.stopAtOnce) void close();
  else
    void o.handedDown.takeOver.then(async (mine) => {
      if (stopping) return;
      const connections = waiting.splice(0);
      if (!mine) {
        // A newer keeper holds these connections: let go of them, without unmounting anything.
        stopping = true;
        clearInterval(sweep);
        await Promise.all(connections.map((c) => closeDevFuse(c.fd)));
        return stopped();
      }
      // Queued again before the first read, so that nothing read here comes twice.
      for (const c of connections) {
        if (!resendUnanswered(c.fd)) o.log(`${c.mountpoint}: the kernel did not queue its unanswered requests again`);
        startHolding(c.id, { mountpoint: c.mountpoint, fd: c.fd, pending: new Map(), unmounting: false });
      }
      o.log(`took over ${connections.length} connections from the mounts daemon that served them`);
      await listen().catch((err) => o.log(`listening on ${o.socket}: ${errorMessage(err)}`));
    });
  // Nothing held and nobody to serve, or nothing held by a keeper that took over (nothing more
  // comes to it): the keeper's work is done.
  exitWhenIdle = () => {
    if (held.size === 0 && (!server || o.handedDown)) void close();
  };
  return { close, finished };
}

/**
 * The keeper's own process: holds the mounts until SIGTERM or SIGINT (then unmounts them), or until
 * it holds nothing and no server is attached. Started with only this module loaded, to stay small.
 */
export async function runKeeperProcess(o: KeeperOptions): Promise<never> {
  const keeper = await runKeeper(o);
  const stop = () => void keeper.close();
  process.once("SIGINT", stop);
  process.once("SIGTERM", stop);
  await keeper.finished;
  process.exit(0);
}
