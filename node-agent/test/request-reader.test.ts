// Both ways of reading a real FUSE connection's requests (fuse/request-reader.ts): on the event loop
// through libuv's pipe handle, and on the thread pool. Each serves a mount that a child process
// walks with many requests in flight, ends when it is unmounted, and closes its descriptor once.
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, describe, expect, test } from "vitest";
import { Bootstrap } from "../../src/format/decode.ts";
import { encodeBootstrap } from "../../src/format/encode.ts";
import { newDir, type FsNode } from "../../src/format/model.ts";
import { mountDevFuse, unmountDevFuse, writeReply } from "../src/fuse/dev-fuse.ts";
import { ImageSession } from "../src/fuse/image-session.ts";
import { requestOpcode } from "../src/fuse/kernel-abi.ts";
import { readRequests, readsOnEventLoop } from "../src/fuse/request-reader.ts";

const sh = promisify(execFile);
const FUSE_INIT = 26;
const root = process.getuid?.() === 0;
const work = mkdtempSync(join(tmpdir(), "skiff-request-reader-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));

/** 20 directories of 50 empty files each. */
function tree(): Bootstrap {
  const top = newDir();
  for (let d = 0; d < 20; d++) {
    const dir = newDir();
    for (let f = 0; f < 50; f++) dir.children!.set(`f${f}`, { ...newDir(), type: "file", perm: 0o644, size: 0, children: undefined, chunks: [] } as FsNode);
    top.children!.set(`d${d}`, dir);
  }
  return Bootstrap.decode(encodeBootstrap({ kind: "image", codec: 0, chunkShift: 20, platform: "linux/amd64", blobs: [], chunks: [], root: top }));
}

describe.skipIf(!root)("a FUSE connection's requests", () => {
  test("are read on the event loop where Node has the pipe binding", () => {
    expect(readsOnEventLoop).toBe(true);
  });

  for (const on of ["loop", "pool"] as const) {
    test(`read on the ${on}: INIT first, every request of parallel walks answered, the end reported once at unmount`, async () => {
      const mnt = mkdtempSync(join(work, `${on}-`));
      const fd = await mountDevFuse(mnt, { fsname: "skiff-test" });
      const session = new ImageSession({ bootstrap: tree(), reader: { read: async () => new Uint8Array(0) }, view: "image", readTimeoutMs: 5_000 });
      const opcodes: number[] = [];
      const ends: (Error | undefined)[] = [];
      let ended!: () => void;
      const end = new Promise<void>((resolve) => (ended = resolve));
      const reader = readRequests(
        fd,
        (req) => {
          opcodes.push(requestOpcode(req));
          session.handle(req, (reply, body) => void writeReply(fd, reply, body));
        },
        (err) => {
          ends.push(err);
          ended();
        },
        on,
      );
      try {
        // Four walkers at once: requests arrive while others wait for their answers.
        const walks = await Promise.all([0, 1, 2, 3].map(() => sh("find", [mnt, "-type", "f"], { timeout: 20_000 })));
        for (const w of walks) expect(w.stdout.trim().split("\n")).toHaveLength(1_000);
        expect(opcodes[0]).toBe(FUSE_INIT);
        expect(opcodes.length).toBeGreaterThan(20);
      } finally {
        await unmountDevFuse(mnt);
      }
      await end;
      expect(ends).toEqual([undefined]);
      await reader.close();
      await reader.close(); // a second close is the first's
    });
  }
});
