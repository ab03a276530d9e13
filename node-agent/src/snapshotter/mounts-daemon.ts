// The process that serves the snapshotter's FUSE mounts, one per lazily served layer, so that they
// outlive the gRPC process: a snapshotter killed and started again finds them still serving and
// adopts them. All mounts share one chunk cache (bounded, LRU), the 16 MiB of chunks last read in
// memory, and one HTTP client to the proxy.
//
// The /dev/fuse connections outlive this daemon through the FUSE keeper (fuse/keeper.ts), so that a
// crash of this daemon doesn't end them: a daemon started again attaches to the keeper and serves
// the same mounts, with what the kernel asked meanwhile. Where the kernel can queue again what a
// dead server had read (Linux 6.9 on), this daemon mounts and reads its connections itself and a
// keeper only holds copies (fuse/connection-holder.ts): no request takes a hop through another
// process. On older kernels the keeper mounts them and relays every request.
// The mount table is kept in <root>/mounts.json, replaced durably: it says how each mount is
// served. If the keeper itself died, its mounts are dead; they are cleared and mounted again.
//
// It answers on a unix socket, JSON over HTTP: POST /mount, POST /unmount, GET /status.
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import { readdir, readFile, rm } from "node:fs/promises";
import { constants } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { Bootstrap } from "../../../src/format/decode.ts";
import { errorMessage } from "../../../src/util/error-message.ts";
import { ChunkCache } from "../chunk-cache.ts";
import { ChunkFetcher } from "../chunk-fetcher.ts";
import { ImageSession } from "../fuse/image-session.ts";
import { canHoldCopies, ConnectionHolder } from "../fuse/connection-holder.ts";
import { kernelResends, mountDevFuse, unmountDevFuse, writeReply } from "../fuse/dev-fuse.ts";
import { errorReply, requestOpcode, requestUnique, UNANSWERED_OPS } from "../fuse/kernel-abi.ts";
import { isKeeperSocket, KEEPER_THREADS } from "../fuse/keeper.ts";
import { isAbsent, KeeperLink } from "../fuse/keeper-link.ts";
import { readRequests, type RequestReader } from "../fuse/request-reader.ts";
import { chunkHex, FirstReads, learnedReads, type LearnedReadsSource } from "../learned-reads.ts";
import { allChunks, chunksIn } from "../prefetch-list.ts";
import { AUTO_NEARBY, LayerGroup, LazyReader, PROGRAM_PREFETCH_BYTES } from "../lazy-reader.ts";
import { LayersForeground, Prefetcher, type PrefetchPhase } from "../prefetcher.ts";
import { recoverStaleMount } from "../mount-image-lazily.ts";
import { proxyHttp, type ProxyHttpOptions } from "../proxy-http.ts";
import { RecentChunks } from "../recent-chunks.ts";
import { writeFileDurably } from "./durable-file.ts";
import { spawnDetached } from "./spawn-detached.ts";

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
  /** The platform manifest of that image: whose learned reads this layer's mount fetches and reports. */
  manifestDigest?: string;
  layerDigest: string;
}

export interface MountsDaemonOptions extends ProxyHttpOptions {
  root: string;
  socket: string;
  cacheDir: string;
  cacheMaxBytes: number;
  /** A read that can't be served in this time fails with EIO. */
  timeoutMs: number;
  /** Learned prefetch (default on): see learned-reads.ts. */
  learnedPrefetch?: boolean;
  /** Program prefetch (default on): see lazy-reader.ts. */
  programPrefetch?: boolean;
  /** Fetch the rest of each lazy layer once its image's reads have paused (default off): see FILL_AFTER_QUIET_MS. */
  fillLayers?: boolean;
  keeperSocket: string;
  /** argv (after node) that starts the FUSE keeper. */
  keeperArgs: string[];
  /** Read the connections here, a keeper holding copies (default: where the kernel and a shell allow it). */
  direct?: boolean;
  log: (message: string) => void;
}

interface Mounted {
  id: number;
  spec: LayerMountSpec;
  /** The keeper that relays this mount's requests; none when this daemon reads them itself. */
  link?: KeeperLink;
  /** The connection this daemon reads itself. */
  own?: OwnConnection;
  session: ImageSession;
  reader: LazyReader;
  fetcher: ChunkFetcher;
  prefetcher?: Prefetcher;
  /** The image's reads across its layers, which this layer's prefetch lets go first. */
  foreground: LayersForeground;
  /** The image's layers, where this layer's program prefetch finds libraries it does not hold. */
  layers?: LayerGroup;
}

interface OwnConnection {
  fd: number;
  requests?: RequestReader;
  unmounting: boolean;
  /** Cleared before the descriptor closes: a reply that comes later must not go to whatever file reuses its number. */
  open: boolean;
}

/** Stops reading a connection and closes this process's descriptor (a keeper may hold a copy). */
const closeOwn = (own: OwnConnection) => {
  own.open = false;
  return own.requests?.close();
};

const TABLE = "mounts.json";
/**
 * With fillLayers, a layer's chunks not yet cached are fetched once its image's reads have paused
 * this long (as a start that ends is judged for learned reports), in the order they are stored,
 * each batch after such a pause, and only while the chunk cache has room (prefetcher.ts): the node
 * then runs the layer without the proxy, as after a full pull, and the start is not slowed.
 */
const FILL_AFTER_QUIET_MS = 5_000;
const { EIO } = constants.errno;
/** How long a daemon whose keeper went away spends reporting first reads before it exits. */
const LOST_REPORT_MS = 3_000;
/** How long a daemon waits before it mounts again the layers of a keeper that went away. */
const LOST_REMOUNT_MS = 1_000;

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

  let closing = false;
  // Listens only once the mounts are served again (below); created here for onLost to close.
  const server = createServer((req, res) => {
    handle(req, res).catch((err) => reply(res, 500, { error: errorMessage(err) }));
  });
  const byId = new Map<number, Mounted>();
  // Per image with layers mounted: its layers' reads as one foreground for their prefetch, and,
  // when learning, the learned list and what its start reads first. Dropped with the image's last
  // layer (forget): a daemon runs for months, through many images.
  const imageKey = (spec: LayerMountSpec) => `${spec.proxy} ${spec.ns ?? ""}/${spec.name}@${spec.manifestDigest ?? spec.layerDigest}`;
  const learningKey = (spec: LayerMountSpec) => `${imageKey(spec)} ${spec.params}`;
  const foregrounds = new Map<string, LayersForeground>();
  const foregroundOf = (spec: LayerMountSpec) => {
    const key = imageKey(spec);
    let foreground = foregrounds.get(key);
    if (!foreground) foregrounds.set(key, (foreground = new LayersForeground()));
    return foreground;
  };
  const learning = new Map<string, { list: Promise<string[]>; firstReads: FirstReads }>();
  const learningFor = (spec: LayerMountSpec) => {
    if (o.learnedPrefetch === false || !spec.manifestDigest) return undefined;
    const key = learningKey(spec);
    let entry = learning.get(key);
    if (!entry) {
      const source: LearnedReadsSource = { proxy: spec.proxy, name: spec.name, ns: spec.ns, manifestDigest: spec.manifestDigest, params: spec.params, fetchImpl: http.fetch, log: o.log };
      entry = { list: learnedReads(source), firstReads: new FirstReads(source) };
      learning.set(key, entry);
    }
    return entry;
  };
  const reportFirstReads = () => Promise.all([...learning.values()].map((e) => e.firstReads.report()));
  /** Drops what this daemon keeps for `spec`'s image once no layer of it is served. */
  const forgetImage = (spec: LayerMountSpec) => {
    const served = [...byId.values()].map((m) => m.spec);
    if (!served.some((other) => imageKey(other) === imageKey(spec))) foregrounds.delete(imageKey(spec));
    const entry = learning.get(learningKey(spec));
    if (entry && !served.some((other) => learningKey(other) === learningKey(spec))) {
      // What the start read so far is reported now rather than never.
      void entry.firstReads.report();
      learning.delete(learningKey(spec));
    }
  };

  /** A layer no longer served: out of the tables and its image's foreground, its prefetch stopped. */
  const forget = async (m: Mounted) => {
    byId.delete(m.id);
    if (mounted.get(m.spec.mountpoint) === m) mounted.delete(m.spec.mountpoint);
    m.foreground.delete(m.reader);
    m.layers?.delete(m.reader);
    forgetImage(m.spec);
    await m.prefetcher?.stop();
    if (m.own) await closeOwn(m.own);
  };

  const direct = o.direct ?? (kernelResends() && canHoldCopies());
  const holder = direct ? new ConnectionHolder({ root: o.root, keeperArgs: o.keeperArgs, log: o.log }) : undefined;
  /** A keeper holds copies of exactly the connections this daemon reads itself. */
  const handDown = () => holder?.hold([...byId.values()].flatMap((m) => (m.own ? [{ id: m.id, mountpoint: m.spec.mountpoint, fd: m.own.fd }] : [])));

  /** A mount that ended without being asked to (unmounted from outside). */
  const gone = (m: Mounted) => {
    o.log(`${m.spec.mountpoint} was unmounted from outside`);
    void forget(m).then(() => m.own && handDown());
    void serially(saveTable);
  };

  const links = new Set<KeeperLink>();
  const connectKeeper = async (socket: string, startKeeper?: () => void): Promise<KeeperLink> => {
    const link: KeeperLink = await KeeperLink.connect({
      socket,
      startKeeper,
      // Requests come only after ready(), when `link` is set.
      onRequest: (id, req) => {
        const m = byId.get(id);
        if (m?.link === link) return m.session.handle(req, (reply, body, sent) => link.reply(id, reply, body, sent));
        if (!UNANSWERED_OPS.has(requestOpcode(req))) link.reply(id, errorReply(requestUnique(req), EIO));
      },
      onGone: (id) => {
        const m = byId.get(id);
        if (m?.link === link) gone(m);
      },
      onLost: () => lost(link),
    });
    return link;
  };

  // A keeper that went away took its mounts with it.
  const lost = (link: KeeperLink) => {
    if (closing) return;
    links.delete(link);
    if (link !== mounter) {
      // Only the mounts it relayed died: they are mounted again, here. Not at once: a keeper
      // stopped together with this daemon (a node shutdown) often goes first, and this daemon
      // then stops rather than mount anything.
      const dead = [...byId.values()].filter((m) => m.link === link);
      if (dead.length === 0) return;
      setTimeout(() => {
        if (closing) return;
        o.log(`a FUSE keeper went away: mounting its ${dead.length} layers again`);
        void serially(async () => {
          for (const m of dead) {
            if (byId.get(m.id) !== m) continue; // unmounted meanwhile
            await forget(m);
            await mount(m.spec).catch((err) => o.log(`remounting ${m.spec.mountpoint}: ${errorMessage(err)}`));
          }
          await saveTable();
        });
      }, LOST_REMOUNT_MS).unref();
      return;
    }
    // The keeper that mounts for this daemon: all mounts died with it. This daemon ends, and the
    // next one (the snapshotter starts it as soon as this one stops listening) starts a keeper and
    // mounts the table again. What the images' starts read first is still reported on the way
    // out: a keeper stopped together with this daemon (a node shutdown) often goes first.
    closing = true;
    o.log("the FUSE keeper went away: exiting so that the layers are mounted again");
    server.close();
    void Promise.race([reportFirstReads(), sleep(LOST_REPORT_MS)]).finally(() => process.exit(1));
  };

  // The keeper that mounts and relays (older kernels), started if none runs; and the keepers that
  // hold mounts of a daemon before this one, if any: those that took over its own connections,
  // and where this daemon reads its connections itself, a keeper that mounted for an earlier one.
  let mounter: KeeperLink | undefined;
  if (!direct) {
    mounter = await connectKeeper(o.keeperSocket, () => {
      // A small young generation: the keeper only passes buffers along, and they die young.
      const pid = spawnDetached(["--max-semi-space-size=1", ...o.keeperArgs], join(o.root, "fuse-keeper.log"), { UV_THREADPOOL_SIZE: String(KEEPER_THREADS) });
      o.log(`started the FUSE keeper (pid ${pid})`);
    });
    links.add(mounter);
  }
  for (const name of (await readdir(o.root)).filter(isKeeperSocket)) {
    const socket = join(o.root, name);
    if (mounter && socket === o.keeperSocket) continue;
    await connectKeeper(socket).then(
      (link) => links.add(link),
      (err) => (isAbsent(err) ? rm(socket, { force: true }) : o.log(`FUSE keeper at ${socket}: ${errorMessage(err)}`)),
    );
  }
  const held = new Map<string, { id: number; link: KeeperLink }>();
  for (const link of links) for (const h of link.held) held.set(h.mountpoint, { id: h.id, link });
  let lastId = Math.max(0, ...[...held.values()].map((h) => h.id));

  // The layers of each image, in the order they were mounted (lowest first, as containerd prepares them).
  const layerGroups = new Map<string, LayerGroup>();
  const layersOf = (spec: LayerMountSpec) => {
    if (!spec.manifestDigest) return undefined;
    const key = imageKey(spec);
    let group = layerGroups.get(key);
    if (!group) layerGroups.set(key, (group = new LayerGroup(() => layerGroups.delete(key))));
    return group;
  };

  /** Serves a layer; `fresh` for one mounted now (for a pull), not one adopted from the daemon before. */
  const serve = async (spec: LayerMountSpec, id: number, fresh: boolean, link?: KeeperLink) => {
    const bootstrap = Bootstrap.decode(new Uint8Array(await readFile(spec.bootstrapFile)));
    const fetcher = new ChunkFetcher({ proxy: spec.proxy, name: spec.name, ns: spec.ns, params: spec.params, timeoutMs: o.timeoutMs, fetchImpl: http.fetch });
    const learned = fresh ? learningFor(spec) : undefined;
    const layers = layersOf(spec);
    const reader = new LazyReader(bootstrap, cache, fetcher, {
      layers,
      recent,
      nearbyBytes: AUTO_NEARBY.bytes,
      nearbyMinRoundTripMs: AUTO_NEARBY.minRoundTripMs,
      programPrefetchBytes: o.programPrefetch === false ? 0 : PROGRAM_PREFETCH_BYTES,
      onChunkRead: learned && ((i) => (learned.firstReads.saw(chunkHex(bootstrap, i)), m.prefetcher?.sawRead(i))),
    });
    const session = new ImageSession({ bootstrap, reader, view: "overlay-layer", readTimeoutMs: o.timeoutMs });
    const foreground = foregroundOf(spec);
    const m: Mounted = { id, spec, link, session, reader, fetcher, foreground, layers };
    foreground.add(reader);
    layers?.add(reader);
    byId.set(id, m);
    mounted.set(spec.mountpoint, m);
    // This layer's share of the learned list, fetched behind the container's own reads; then, with
    // fillLayers, the rest of the layer.
    void (learned?.list ?? Promise.resolve([])).then((hexes) => {
      if (byId.get(id) !== m) return;
      const phases: PrefetchPhase[] = [];
      const chunks = chunksIn(bootstrap, hexes);
      if (chunks.length > 0) {
        reader.followLearnedList(() => m.prefetcher?.offTrack ?? true);
        phases.push({ chunks, quietMs: 0, followsReads: true });
      }
      if (o.fillLayers) phases.push({ chunks: allChunks(bootstrap), quietMs: FILL_AFTER_QUIET_MS, withinCacheRoom: true });
      if (phases.length === 0) return;
      m.prefetcher = new Prefetcher(bootstrap, cache, fetcher, foreground, phases, { log: o.log });
      m.prefetcher.start();
    });
    return m;
  };

  const mount = async (spec: LayerMountSpec) => {
    if (mounted.has(spec.mountpoint)) return;
    await recoverStaleMount(spec.mountpoint);
    // Served before it is mounted: the kernel's first request (INIT) comes at once.
    const m = await serve(spec, ++lastId, true, mounter);
    try {
      if (mounter) await mounter.mount(m.id, spec.mountpoint);
      else await mountOwn(m);
    } catch (err) {
      await forget(m);
      throw err;
    }
  };

  /** Mounts a connection this daemon reads and answers itself; a keeper gets a copy. */
  const mountOwn = async (m: Mounted) => {
    const fd = await mountDevFuse(m.spec.mountpoint);
    const own: OwnConnection = { fd, unmounting: false, open: true };
    m.own = own;
    const send = (reply: Uint8Array, body?: readonly Uint8Array[], sent?: () => void) => {
      if (own.open) writeReply(fd, reply, body);
      sent?.();
    };
    own.requests = readRequests(
      fd,
      (req) => m.session.handle(req, send),
      (err) => {
        if (own.unmounting || byId.get(m.id) !== m) return;
        if (err) o.log(`${m.spec.mountpoint}: ${errorMessage(err)}`);
        gone(m);
      },
    );
    handDown();
  };

  const unmount = async (mountpoint: string) => {
    const m = mounted.get(mountpoint);
    if (!m) return recoverStaleMount(mountpoint).then(() => {});
    await m.prefetcher?.stop();
    if (m.own) {
      m.own.unmounting = true;
      await unmountDevFuse(mountpoint);
    } else await m.link?.unmount(m.id);
    await forget(m);
    if (m.own) handDown();
  };

  // The table of the daemon before this one: serve what the keeper still holds, mount the rest again.
  let table: LayerMountSpec[] = [];
  try {
    table = JSON.parse(await readFile(join(o.root, TABLE), "utf8")) as LayerMountSpec[];
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") o.log(`cannot read the mount table: ${errorMessage(err)}`);
  }
  let adopted = 0;
  for (const spec of table) {
    const h = held.get(spec.mountpoint);
    held.delete(spec.mountpoint);
    const step = h ? serve(spec, h.id, false, h.link).then(() => adopted++) : mount(spec);
    await step.catch((err) => o.log(`${h ? "serving" : "remounting"} ${spec.mountpoint}: ${errorMessage(err)}`));
  }
  for (const link of links) link.ready();
  // Held by a keeper but in no table (a daemon died between the two): nobody can serve them.
  for (const { id, link } of held.values()) await link.unmount(id).catch(() => {});
  if (table.length > 0) o.log(`serving ${mounted.size} of ${table.length} layers again (${adopted} kept up by the FUSE keeper)`);
  await saveTable();

  const status = () => ({
    pid: process.pid,
    cache: cache.stats,
    // Images with a layer served, and those of them still learning what their start reads.
    images: { served: foregrounds.size, learning: learning.size },
    mounts: [...mounted.values()].map(({ spec, fetcher, reader, prefetcher }) => ({
      image: spec.image,
      layer: spec.layerDigest,
      bytesFetched: fetcher.stats.bytesFetched,
      fetches: fetcher.stats.fetches,
      fetchMs: fetcher.stats.fetchMs,
      errors: fetcher.stats.errors,
      cacheHits: reader.stats.cacheHits,
      prefetchedChunks: prefetcher?.stats.chunks ?? 0,
      prefetchDone: prefetcher?.stats.done ?? false,
    })),
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
  o.log(`mounts daemon ${process.pid} listening on ${o.socket}; ${direct ? "it reads its FUSE connections itself, a keeper holding copies" : "the FUSE keeper relays its requests"}`);

  return {
    // Stopping the daemon on purpose (an upgrade) leaves the mounts with the keeper: containers
    // keep them, and the next daemon serves them.
    close: async () => {
      closing = true;
      const stopped = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      await stopped;
      await queue;
      // What the images' starts read first so far is still worth reporting.
      await reportFirstReads();
      // This daemon's own connections: read no more; the keeper holding copies takes them over.
      for (const m of byId.values()) if (m.own) await closeOwn(m.own);
      holder?.close();
      for (const link of links) link.close();
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
