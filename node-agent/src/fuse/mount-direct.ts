// An image served over its own /dev/fuse connection by this process (no keeper): `skiff mount`'s
// and the tests' way. The same session answers as behind the keeper.
import type { Bootstrap } from "../../../src/format/decode.ts";
import type { FileReader } from "../file-reader.ts";
import type { ImageView } from "../image-view.ts";
import { closeDevFuse, mountDevFuse, readRequests, unmountDevFuse, writeReply } from "./dev-fuse.ts";
import { ImageSession } from "./image-session.ts";

export interface DirectMountOptions {
  bootstrap: Bootstrap;
  reader: FileReader;
  /** An existing, empty directory. */
  mountpoint: string;
  view?: ImageView;
  /** A read the reader hasn't answered after this long fails with EIO; default 60 s. */
  readTimeoutMs?: number;
  allowOther?: boolean;
}

export interface DirectMount {
  readonly mountpoint: string;
  /** Settles when the connection has ended (unmounted, by us or from outside). */
  readonly ended: Promise<void>;
  unmount(): Promise<void>;
}

export async function mountDirect(o: DirectMountOptions): Promise<DirectMount> {
  const session = new ImageSession({ bootstrap: o.bootstrap, reader: o.reader, view: o.view ?? "image", readTimeoutMs: o.readTimeoutMs ?? 60_000 });
  const fd = await mountDevFuse(o.mountpoint, { allowOther: o.allowOther });
  const ended = new Promise<void>((resolve) =>
    readRequests(
      fd,
      (req) => session.handle(req, (reply, body) => void writeReply(fd, reply, body)),
      () => resolve(),
    ),
  ).then(() => closeDevFuse(fd));
  let unmounted: Promise<void> | undefined;
  return {
    mountpoint: o.mountpoint,
    ended,
    unmount: () => (unmounted ??= unmountDevFuse(o.mountpoint).then(() => ended)),
  };
}
