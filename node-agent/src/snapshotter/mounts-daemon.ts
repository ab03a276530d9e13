// The process that holds the snapshotter's FUSE mounts, one per lazily served layer, so that they
// outlive the gRPC process: a snapshotter killed and started again finds them still serving and
// adopts them. All mounts share one chunk cache (bounded, LRU), the 16 MiB of chunks last read in
// memory, and one HTTP client to the proxy.
// The mount table is kept in <root>/mounts.json, replaced durably; a daemon that starts (after a
// crash of the last one) clears the dead mountpoints and mounts the table again.
//
// It answers on a unix socket, JSON over HTTP: POST /mount, POST /unmount, GET /status.
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import { readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { Bootstrap } from "../../../src/format/decode.ts";
import { errorMessage } from "../../../src/util/error-message.ts";
import { ChunkCache } from "../chunk-cache.ts";
import { ChunkFetcher } from "../chunk-fetcher.ts";
import { mountImage, type MountedImage } from "../fuse-fs.ts";
import { LazyReader } from "../lazy-reader.ts";
import { recoverStaleMount } from "../mount-image-lazily.ts";
import { proxyHttp, type ProxyHttpOptions } from "../proxy-http.ts";
import { RecentChunks } from "../recent-chunks.ts";
import { writeFileDurably } from "./durable-file.ts";

/** One layer mount: where, from which bootstrap file, and how its chunks are reached. */
export interface LayerMountSpec {
  mountpoint: string;
  bootstrapFile: string;
  proxy: string;
  name: string;
  ns?: string;
  params: string;
  /** The image reference it was pulled as, for metrics. */
  image: string;
  layerDigest: string;
}

export interface MountsDaemonOptions extends ProxyHttpOptions {
  root: string;
  socket: string;
  cacheDir: string;
  cacheMaxBytes: number;
  /** A read that can't be served in this time fails with EIO. */
  timeoutMs: number;
  log: (message: string) => void;
}

interface Mounted {
  spec: LayerMountSpec;
  fuse: MountedImage;
  reader: LazyReader;
  fetcher: ChunkFetcher;
}

const TABLE = "mounts.json";

export async function runMountsDaemon(o: MountsDaemonOptions): Promise<{ close(): Promise<void> }> {
  const cache = await ChunkCache.open(o.cacheDir, { maxBytes: o.cacheMaxBytes });
  const http = await proxyHttp(o);
  // The chunks last read, in memory, for all the mounts: chunks are named by content, so one
  // bound for the process (16 MiB), not one per layer (60 layers could have held 960 MiB).
  const recent = new RecentChunks();
  const mounted = new Map<string, Mounted>();
  let queue: Promise<unknown> = Promise.resolve();
  const serially = <T>(fn: () => Promise<T>): Promise<T> => {
    const next = queue.then(fn);
    queue = next.catch(() => {});
    return next;
  };

  const saveTable = () => writeFileDurably(join(o.root, TABLE), JSON.stringify([...mounted.values()].map((m) => m.spec)));

  const mount = async (spec: LayerMountSpec) => {
    if (mounted.has(spec.mountpoint)) return;
    const bootstrap = Bootstrap.decode(new Uint8Array(await readFile(spec.bootstrapFile)));
    await recoverStaleMount(spec.mountpoint);
    const fetcher = new ChunkFetcher({ proxy: spec.proxy, name: spec.name, ns: spec.ns, params: spec.params, timeoutMs: o.timeoutMs, fetchImpl: http.fetch });
    const reader = new LazyReader(bootstrap, cache, fetcher, { recent });
    const fuse = await mountImage({ bootstrap, reader, mountpoint: spec.mountpoint, readTimeoutMs: o.timeoutMs, view: "overlay-layer" });
    mounted.set(spec.mountpoint, { spec, fuse, reader, fetcher });
  };

  const unmount = async (mountpoint: string) => {
    const m = mounted.get(mountpoint);
    if (!m) return recoverStaleMount(mountpoint).then(() => {});
    await m.fuse.unmount();
    mounted.delete(mountpoint);
  };

  // The table of the daemon before this one: mount it again.
  let table: LayerMountSpec[] = [];
  try {
    table = JSON.parse(await readFile(join(o.root, TABLE), "utf8")) as LayerMountSpec[];
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") o.log(`cannot read the mount table: ${errorMessage(err)}`);
  }
  for (const spec of table) {
    await mount(spec).catch((err) => o.log(`remounting ${spec.mountpoint}: ${errorMessage(err)}`));
  }
  if (table.length > 0) o.log(`mounted ${mounted.size} of ${table.length} layers again`);
  await saveTable();

  const status = () => ({
    pid: process.pid,
    cache: cache.stats,
    mounts: [...mounted.values()].map(({ spec, fetcher, reader }) => ({
      image: spec.image,
      layer: spec.layerDigest,
      bytesFetched: fetcher.stats.bytesFetched,
      fetches: fetcher.stats.fetches,
      fetchMs: fetcher.stats.fetchMs,
      errors: fetcher.stats.errors,
      cacheHits: reader.stats.cacheHits,
    })),
  });

  const server = createServer((req, res) => {
    handle(req, res).catch((err) => reply(res, 500, { error: errorMessage(err) }));
  });
  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (req.method === "GET" && req.url === "/status") return reply(res, 200, status());
    if (req.method !== "POST") return reply(res, 404, { error: `no route ${req.method} ${req.url}` });
    const body = JSON.parse(await readText(req)) as LayerMountSpec;
    if (req.url === "/mount") {
      await serially(async () => {
        await mount(body);
        await saveTable();
      });
      return reply(res, 200, { mounted: body.mountpoint });
    }
    if (req.url === "/unmount") {
      await serially(async () => {
        await unmount(body.mountpoint);
        await saveTable();
      });
      return reply(res, 200, { unmounted: body.mountpoint });
    }
    reply(res, 404, { error: `no route ${req.method} ${req.url}` });
  }

  await rm(o.socket, { force: true });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(o.socket, () => resolve());
  });
  o.log(`mounts daemon ${process.pid} listening on ${o.socket}`);

  return {
    // Stopping the daemon on purpose unmounts everything (a crash leaves the table to mount again).
    close: async () => {
      const stopped = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      await stopped;
      await serially(async () => {
        for (const mountpoint of [...mounted.keys()]) await unmount(mountpoint).catch((err) => o.log(`unmounting ${mountpoint}: ${errorMessage(err)}`));
      });
      await http.close();
    },
  };
}

function reply(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  res.end(text);
}

async function readText(req: IncomingMessage): Promise<string> {
  const parts: Buffer[] = [];
  let length = 0;
  for await (const part of req as AsyncIterable<Buffer>) {
    length += part.length;
    if (length > 1 << 20) throw new Error("request too large");
    parts.push(part);
  }
  return Buffer.concat(parts).toString("utf8");
}
