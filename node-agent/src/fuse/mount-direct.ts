// An image served over its own /dev/fuse connection by this process (no keeper): `skiff mount`'s
// and the tests' way. The same session answers as behind the keeper.
//
// Mounting and serving are two steps, so that a caller can mount while it still fetches the image's
// bootstrap: the kernel holds the mount's requests (its INIT first) until the session reads them.
import type { Bootstrap } from "../../../src/format/decode.ts";
import type { FileReader } from "../file-reader.ts";
import type { ImageView } from "../image-view.ts";
import { closeDevFuse, mountDevFuse, unmountDevFuse, writeReply } from "./dev-fuse.ts";
import { ImageSession } from "./image-session.ts";
import { readRequests, type RequestReader } from "./request-reader.ts";

export interface DirectServeOptions {
  bootstrap: Bootstrap;
  reader: FileReader;
  view?: ImageView;
  /** A read the reader hasn't answered after this long fails with EIO; default 60 s. */
  readTimeoutMs?: number;
}

export interface DirectMountOptions extends DirectServeOptions {
  /** An existing, empty directory. */
  mountpoint: string;
  allowOther?: boolean;
}

export interface DirectMount {
  readonly mountpoint: string;
  /** Settles when the connection has ended (unmounted, by us or from outside). */
  readonly ended: Promise<void>;
  unmount(): Promise<void>;
}

/** A connection mounted and not yet served: anything that touches the mount waits. */
export interface UnservedMount {
  serve(o: DirectServeOptions): DirectMount;
  /** Unmounts and closes the connection without serving it. */
  abandon(): Promise<void>;
}

export async function mountUnserved(mountpoint: string, o: { allowOther?: boolean } = {}): Promise<UnservedMount> {
  const fd = await mountDevFuse(mountpoint, o);
  return {
    serve: (s) => serve(fd, mountpoint, s),
    // Not a plain umount: that would wait for the INIT nobody answers. Closing the descriptor first
    // ends the connection, then the detached mount goes.
    abandon: async () => {
      await closeDevFuse(fd);
      await unmountDevFuse(mountpoint).catch(() => undefined);
    },
  };
}

export async function mountDirect(o: DirectMountOptions): Promise<DirectMount> {
  return (await mountUnserved(o.mountpoint, { allowOther: o.allowOther })).serve(o);
}

function serve(fd: number, mountpoint: string, o: DirectServeOptions): DirectMount {
  const session = new ImageSession({ bootstrap: o.bootstrap, reader: o.reader, view: o.view ?? "image", readTimeoutMs: o.readTimeoutMs ?? 60_000 });
  let requests: RequestReader;
  const ended = new Promise<void>((resolve) => {
    requests = readRequests(
      fd,
      (req) =>
        session.handle(req, (reply, body, sent) => {
          writeReply(fd, reply, body);
          sent?.();
        }),
      () => resolve(),
    );
  }).then(() => requests.close());
  let unmounted: Promise<void> | undefined;
  return {
    mountpoint,
    ended,
    unmount: () => (unmounted ??= unmountDevFuse(mountpoint).then(() => ended)),
  };
}
