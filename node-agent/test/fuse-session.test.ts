// skiff's own FUSE session (node-agent/src/fuse/image-session.ts) fed raw kernel requests: what a
// real mount never sends (unknown node ids, cut-short bodies, offsets past the end) is answered with
// an errno and never throws; a reader that fails or stalls gives EIO. The keeper's frames are cut
// right from a stream however it is split, and a reply's pieces are given back once written. Real
// mounts: fuse-fs.test.ts and the snapshotter e2e.
import { mkdtempSync, rmSync } from "node:fs";
import { connect, createServer, type Socket } from "node:net";
import { constants, tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, test } from "vitest";
import { Bootstrap } from "../../src/format/decode.ts";
import { encodeBootstrap } from "../../src/format/encode.ts";
import { newDir, type FsNode } from "../../src/format/model.ts";
import type { FilePieces } from "../src/file-reader.ts";
import { kernelResends, READAHEAD_BYTES } from "../src/fuse/dev-fuse.ts";
import { ImageSession } from "../src/fuse/image-session.ts";
import * as K from "../src/fuse/kernel-abi.ts";
import { encodeFrame, Frame, FrameReader, FrameWriter } from "../src/fuse/keeper-protocol.ts";

const E = constants.errno;

function file(size: number): FsNode {
  return { ...newDir(), type: "file", perm: 0o644, size, children: undefined, chunks: [] };
}

/** `/etc/hostname` (empty file) and `/big` (a file the reader serves). */
function bootstrap(): Bootstrap {
  const etc = newDir();
  etc.children!.set("hostname", file(0));
  const root = newDir();
  root.children!.set("etc", etc);
  root.children!.set("big", file(0));
  return Bootstrap.decode(encodeBootstrap({ kind: "image", codec: 0, chunkShift: 20, platform: "linux/amd64", blobs: [], chunks: [], root }));
}

let unique = 0n;
function request(opcode: number, nodeid: bigint, body: Uint8Array = new Uint8Array(0)): Uint8Array {
  const req = new Uint8Array(K.IN_HEADER_SIZE + body.byteLength);
  const v = new DataView(req.buffer);
  v.setUint32(0, req.byteLength, true);
  v.setUint32(4, opcode, true);
  v.setBigUint64(8, ++unique, true);
  v.setBigUint64(16, nodeid, true);
  req.set(body, K.IN_HEADER_SIZE);
  return req;
}

/** The session's reply to `req`: its errno (0 for success) and body. */
function ask(session: ImageSession, req: Uint8Array): Promise<{ errno: number; body: Uint8Array } | null> {
  return new Promise((resolve) => {
    session.handle(req, (header, body) => {
      // As the kernel sees it: the header and the body that follows it, in one write.
      const reply = body ? new Uint8Array([...header, ...body.flatMap((piece) => [...piece])]) : header;
      const v = new DataView(reply.buffer, reply.byteOffset);
      expect(v.getUint32(0, true)).toBe(reply.byteLength);
      expect(v.getBigUint64(8, true)).toBe(new DataView(req.buffer).getBigUint64(8, true));
      resolve({ errno: Math.abs(v.getInt32(4, true)), body: reply.subarray(K.OUT_HEADER_SIZE) });
    });
    setTimeout(() => resolve(null), 200);
  });
}

const name = (s: string) => new TextEncoder().encode(`${s}\0`);
const readIn = (offset: number, size: number) => {
  const body = new Uint8Array(40);
  const v = new DataView(body.buffer);
  v.setBigUint64(8, BigInt(offset), true);
  v.setUint32(16, size, true);
  return body;
};

describe("the FUSE session answers raw requests", () => {
  const b = bootstrap();
  const reader = { read: async () => new Uint8Array([1, 2, 3]) };
  const session = new ImageSession({ bootstrap: b, reader, view: "image", readTimeoutMs: 100 });
  const etc = BigInt(b.lookup("/etc")! + 1);
  const big = BigInt(b.lookup("/big")! + 1);

  test("INIT asks for the mount's full readahead, not the kernel's smaller offer (which would lower what mounting raised)", async () => {
    const init = new Uint8Array(16);
    const v = new DataView(init.buffer);
    v.setUint32(0, K.FUSE_KERNEL_VERSION, true);
    v.setUint32(4, 31, true);
    v.setUint32(8, 128 << 10, true); // the kernel's default offer
    v.setUint32(12, K.InitFlag.ASYNC_READ | K.InitFlag.MAX_PAGES, true);
    const reply = await ask(session, request(K.Op.INIT, 0n, init));
    expect(reply!.errno).toBe(0);
    const out = new DataView(reply!.body.buffer, reply!.body.byteOffset);
    expect(out.getUint32(8, true)).toBe(READAHEAD_BYTES);
    expect(READAHEAD_BYTES).toBeGreaterThan(128 << 10);
  });

  test("LOOKUP finds a name, and caches a missing one as node 0", async () => {
    const found = await ask(session, request(K.Op.LOOKUP, BigInt(K.FUSE_ROOT_ID), name("etc")));
    expect(found!.errno).toBe(0);
    expect(new DataView(found!.body.buffer, found!.body.byteOffset).getBigUint64(0, true)).toBe(etc);
    const missing = await ask(session, request(K.Op.LOOKUP, etc, name("nope")));
    expect(missing!.errno).toBe(0);
    expect(new DataView(missing!.body.buffer, missing!.body.byteOffset).getBigUint64(0, true)).toBe(0n);
  });

  test("node ids the bootstrap doesn't have are ESTALE; bodies cut short are EIO; nothing throws", async () => {
    expect((await ask(session, request(K.Op.GETATTR, 0n)))!.errno).toBe(E.ESTALE);
    expect((await ask(session, request(K.Op.GETATTR, 1n << 40n)))!.errno).toBe(E.ESTALE);
    expect((await ask(session, request(K.Op.READ, 1n << 40n, readIn(0, 10))))!.errno).toBe(E.ESTALE);
    // READ and OPEN with no body at all.
    expect((await ask(session, request(K.Op.READ, big)))!.errno).toBe(E.EIO);
    expect((await ask(session, request(K.Op.OPEN, big)))!.errno).toBe(E.EIO);
  });

  test("a directory listing past its end is empty; reading a directory is EISDIR; writes are EROFS; unknown ops ENOSYS", async () => {
    const past = await ask(session, request(K.Op.READDIR, etc, readIn(1_000_000, 4096)));
    expect(past).toEqual({ errno: 0, body: new Uint8Array(0) });
    expect((await ask(session, request(K.Op.READ, etc, readIn(0, 10))))!.errno).toBe(E.EISDIR);
    expect((await ask(session, request(K.Op.MKDIR, etc, name("x"))))!.errno).toBe(E.EROFS);
    expect((await ask(session, request(9999, etc)))!.errno).toBe(E.ENOSYS);
  });

  test("FORGET and INTERRUPT get no reply", async () => {
    expect(await ask(session, request(K.Op.FORGET, etc, new Uint8Array(8)))).toBeNull();
    expect(await ask(session, request(K.Op.INTERRUPT, etc, new Uint8Array(8)))).toBeNull();
  });

  test("a read the reader fails, or doesn't answer within the timeout, is EIO", async () => {
    const failing = new ImageSession({ bootstrap: b, reader: { read: () => Promise.reject(new Error("no")) }, view: "image", readTimeoutMs: 100 });
    expect((await ask(failing, request(K.Op.READ, big, readIn(0, 10))))!.errno).toBe(E.EIO);
    const stalled = new ImageSession({ bootstrap: b, reader: { read: () => new Promise(() => {}) }, view: "image", readTimeoutMs: 50 });
    expect((await ask(stalled, request(K.Op.READ, big, readIn(0, 10))))!.errno).toBe(E.EIO);
    const served = await ask(session, request(K.Op.READ, big, readIn(0, 2)));
    expect(served).toEqual({ errno: 0, body: new Uint8Array([1, 2]) });
  });

  test("a read's pieces are sent as they are, and given back to the reader only once sent; a late read's at once", async () => {
    const released: string[] = [];
    const events: string[] = [];
    let answer: (p: FilePieces) => void = () => {};
    const pieced = new ImageSession({
      bootstrap: b,
      reader: {
        read: () => Promise.reject(new Error("unused")),
        readPieces: (_inode, offset) =>
          offset === 0
            ? Promise.resolve({ pieces: [new Uint8Array([1, 2]), new Uint8Array([3, 4])], release: () => (released.push("first"), events.push("released")) })
            : new Promise((resolve) => (answer = resolve)),
      },
      view: "image",
      readTimeoutMs: 50,
    });
    const sent = await new Promise<Uint8Array[]>((resolve) =>
      pieced.handle(request(K.Op.READ, big, readIn(0, 3)), (_header, body, done) => {
        events.push("sent");
        resolve([...body!]);
        done?.();
      }),
    );
    expect(sent).toEqual([new Uint8Array([1, 2]), new Uint8Array([3])]);
    expect(events).toEqual(["sent", "released"]);
    // Past its timeout the read is EIO; its pieces, when they come, go straight back.
    expect((await ask(pieced, request(K.Op.READ, big, readIn(8, 2))))!.errno).toBe(E.EIO);
    answer({ pieces: [new Uint8Array([9, 9])], release: () => released.push("late") });
    await new Promise((r) => setTimeout(r, 10));
    expect(released).toEqual(["first", "late"]);
  });
});

describe("the keeper's frames", () => {
  test("come out whole however the stream is cut (in the pieces it came in), and a length no frame can have breaks the stream", () => {
    const frames = [encodeFrame(Frame.REQUEST, 7, new Uint8Array(100_000).fill(3)), encodeFrame(Frame.READY, 0), encodeFrame(Frame.REPLY, 1, new Uint8Array([9]))];
    const stream = Buffer.concat(frames);
    for (const cut of [1, 5, 9, 4096, stream.length]) {
      const reader = new FrameReader();
      const out = [];
      for (let at = 0; at < stream.length; at += cut) out.push(...reader.push(stream.subarray(at, at + cut)));
      expect(out.map((f) => [f.type, f.id, f.payload.length])).toEqual([[Frame.REQUEST, 7, 100_000], [Frame.READY, 0, 0], [Frame.REPLY, 1, 1]]);
      expect(out[0]!.payload.every((x) => x === 3)).toBe(true);
    }
    // A frame read in pieces is handed on in those pieces (not joined), bytes in order.
    const payload = Uint8Array.from({ length: 70_000 }, (_, i) => i % 251);
    const split = encodeFrame(Frame.REPLY, 2, payload);
    const reader = new FrameReader();
    const pieces = [split.subarray(0, 5), split.subarray(5, 30), split.subarray(30, 65_536), split.subarray(65_536)].flatMap((c) => reader.push(c));
    expect(pieces).toHaveLength(1);
    expect(pieces[0]!.parts.length).toBeGreaterThan(1);
    expect(Buffer.concat(pieces[0]!.parts)).toEqual(Buffer.from(payload));
    expect(pieces[0]!.payload).toEqual(Buffer.from(payload));
    const huge = Buffer.alloc(9);
    huge.writeUInt32LE(0xffff_ffff, 0);
    expect(() => new FrameReader().push(huge)).toThrow(/frame of/);
  });

  test("a reply sent in pieces arrives whole, and its pieces are given back only once the socket has written them", async () => {
    const [a, b] = await socketPair();
    try {
      const writer = new FrameWriter(a);
      const frames = new FrameReader();
      const got: Buffer[] = [];
      b.on("data", (d: Buffer) => got.push(...frames.push(d).map((f) => Buffer.concat(f.parts))));
      const pieces = [new Uint8Array(200_000).fill(1), new Uint8Array(300_000).fill(2)];
      const written = new Promise<number>((resolve) => writer.send(Frame.REPLY, 1, new Uint8Array([7]), pieces, () => resolve(a.writableLength)));
      expect(await written).toBe(0); // nothing of it left in the socket's buffer
      for (let i = 0; i < 100 && got.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
      expect(Buffer.compare(got[0]!, Buffer.concat([Buffer.from([7]), ...pieces]))).toBe(0);
      a.destroy();
      let late = false;
      writer.send(Frame.REPLY, 2, new Uint8Array([7]), pieces, () => (late = true));
      expect(late).toBe(true); // a socket gone: given back at once
    } finally {
      a.destroy();
      b.destroy();
    }
  });
});

/** Two connected unix sockets. */
async function socketPair(): Promise<[Socket, Socket]> {
  const dir = mkdtempSync(join(tmpdir(), "skiff-frames-"));
  const path = join(dir, "s");
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(path, resolve));
  const accepted = new Promise<Socket>((resolve) => server.once("connection", resolve));
  const client = connect(path);
  await new Promise((resolve) => client.once("connect", resolve));
  const other = await accepted;
  server.close();
  rmSync(dir, { recursive: true, force: true }); // connected: the socket's name is no longer needed
  return [client, other];
}

describe("whether the mounts daemon may read its connections itself", () => {
  test("only from Linux 6.9, which queues again what a dead server had read", () => {
    expect(["5.15.0-91-generic", "6.1.0-18-amd64", "6.8.12"].map((r) => kernelResends(r))).toEqual([false, false, false]);
    expect(["6.9.0", "6.18.44-fc-v1272", "7.0.1", "10.2"].map((r) => kernelResends(r))).toEqual([true, true, true, true]);
  });

  test("the resend notification is a bare reply header with unique 0 and code 7", () => {
    const n = K.notifyResend();
    const v = new DataView(n.buffer, n.byteOffset, n.byteLength);
    expect([n.byteLength, v.getUint32(0, true), v.getInt32(4, true), v.getBigUint64(8, true)]).toEqual([16, 16, 7, 0n]);
  });
});
