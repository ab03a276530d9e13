// `skiff mount`: pins an image's bootstrap, mounts it read-only over FUSE with chunks fetched on
// demand, optionally stacks a writable overlayfs on top, prefetches in the background and records
// what reads need (prefetch lists), keeps --stats current, and unmounts cleanly (overlay first) on
// SIGINT/SIGTERM. Everything that touches the mountpoint runs in another process or
// asynchronously: FUSE requests are served on this process's JS thread.
import { execFile } from "node:child_process";
import { mkdir, rename, statfs, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { promisify } from "node:util";
import { fetchBootstrap } from "../../src/client/lazy-api.ts";
import { nodeHasher } from "../../src/hash/node.ts";
import { ChunkCache } from "./chunk-cache.ts";
import { ChunkFetcher } from "./chunk-fetcher.ts";
import { mountUnserved } from "./fuse/mount-direct.ts";
import { LazyReader } from "./lazy-reader.ts";
import { allChunks, chunksIn, PrefetchRecorder, readPrefetchList } from "./prefetch-list.ts";
import { Prefetcher, type PrefetchPhase } from "./prefetcher.ts";
import { chunkHex, FirstReads, learnedReads, type LearnedReadsSource } from "./learned-reads.ts";
import { proxyHttp } from "./proxy-http.ts";
import { trace, tracing } from "./trace.ts";
import type { FetchLike } from "./range-request.ts";

const run = promisify(execFile);

// `--prefetch all` waits for reads to pause this long: fetching everything at once would compete
// with them for the link and the agent's thread. A list runs ahead of the reads instead.
const ALL_AFTER_QUIET_MS = 250;

export interface LazyMountOptions {
  proxy: string;
  name: string;
  reference: string;
  mountpoint: string;
  cacheDir: string;
  cacheMaxBytes?: number;
  statsFile?: string;
  overlayDir?: string;
  timeoutMs: number;
  platform?: string;
  /** Conversion parameters asked of the proxy (`codec`, `chunk-size` query values); the proxy's defaults when absent. */
  codec?: string;
  chunkSize?: string;
  /** Sent with every request to the proxy: `Bearer …` or `Basic …`. */
  authorization?: string;
  /** PEM bundle trusted for an https proxy. */
  ca?: string;
  /** An HTTP proxy (a dfdaemon peer, say) that every request to the skiff proxy goes through. */
  httpProxy?: string;
  /** Background prefetch, in this order: `all` (every chunk) or the path of a prefetch list. */
  prefetch?: string[];
  /** Limit on prefetched bytes per second. */
  prefetchBytesPerSecond?: number;
  /** Stored bytes after a missed chunk fetched with it in the background (0: off). */
  nearbyBytes?: number;
  /** Nearby fetches only while a round trip to the proxy takes at least this long (ms; 0: always). */
  nearbyMinRoundTripMs?: number;
  /** Program prefetch's bound per file (LazyReaderOptions); 0 or absent: off. */
  programPrefetchBytes?: number;
  /** Write the chunks reads need, in first-read order, to this prefetch list. */
  recordFile?: string;
  /**
   * Learned prefetch (default on): fetch first the chunks the edge learned this image reads first,
   * and report what this mount reads first.
   */
  learnedPrefetch?: boolean;
  log: (message: string) => void;
}

export interface LazyMount {
  manifestDigest: string;
  stop(): Promise<void>;
}

/**
 * Clears a mountpoint left behind by a killed agent with a lazy unmount. statfs always reaches
 * the FUSE daemon (stat may be answered from the kernel's attribute cache); a dead one gives
 * ECONNABORTED right after it died and ENOTCONN once the connection is torn down.
 */
export async function recoverStaleMount(mountpoint: string): Promise<boolean> {
  try {
    await statfs(mountpoint);
    return false;
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code !== "ENOTCONN" && code !== "ECONNABORTED") return false;
    await run("fusermount", ["-uz", mountpoint]).catch(() => run("umount", ["-l", mountpoint]));
    return true;
  }
}

export async function unmountPath(mountpoint: string): Promise<void> {
  await run("umount", [mountpoint]).catch(() => run("fusermount", ["-u", mountpoint]));
}

/** The bootstrap's fetch, its responses' arrival traced (SKIFF_TRACE). */
function tracedBootstrapFetch(fetchImpl: FetchLike): FetchLike {
  if (!tracing) return fetchImpl;
  return async (url, init) => {
    const res = await fetchImpl(url, init);
    trace("bootstrap-response", { status: res.status });
    return res;
  };
}

export async function mountLazily(o: LazyMountOptions): Promise<LazyMount> {
  const mountpoint = resolve(o.mountpoint);
  if (await recoverStaleMount(mountpoint)) o.log(`cleared a stale mount at ${mountpoint}`);
  const lower = o.overlayDir ? join(resolve(o.overlayDir), "lower") : mountpoint;
  await mkdir(lower, { recursive: true });
  if (o.overlayDir) await recoverStaleMount(lower);
  // As root, skiff's own FUSE session over /dev/fuse (1 MiB reads, no libfuse threads), mounted
  // while the bootstrap is on its way (its `mount` process runs beside the request); otherwise
  // fuse-native, whose libfuse mounts through the setuid fusermount, loaded only when used.
  const unserved = process.getuid?.() === 0 ? mountUnserved(lower) : undefined;
  unserved?.catch(() => undefined); // a failure is met where it is awaited, once the bootstrap is in
  const http = await proxyHttp({ authorization: o.authorization, ca: o.ca, httpProxy: o.httpProxy });
  const closeHttp = () => http.close(); // its keep-alive sockets would hold the process open
  /** Undoes what was set up so far when a later step fails. */
  const abandon = async (err: Error): Promise<never> => {
    await unserved?.then((u) => u.abandon(), () => undefined);
    await closeHttp();
    throw err;
  };
  trace("bootstrap-request");
  const fetched = await fetchBootstrap(o.proxy, o.name, o.reference, { platform: o.platform, codec: o.codec, chunkSize: o.chunkSize, timeoutMs: o.timeoutMs, retryFailures: true, fetchImpl: tracedBootstrapFetch(http.fetch), hasher: nodeHasher }).catch(abandon);
  trace("bootstrap-decoded", { bytes: fetched.bootstrap.bytes.length, inodes: fetched.bootstrap.inodeCount, chunks: fetched.bootstrap.chunkCount });
  const fetcher = new ChunkFetcher({ proxy: o.proxy, name: o.name, params: fetched.params, timeoutMs: o.timeoutMs, fetchImpl: http.fetch });
  const bootstrap = fetched.bootstrap;
  let recorder: PrefetchRecorder | undefined;
  const phases: PrefetchPhase[] = [];
  const learnedFrom: LearnedReadsSource | undefined =
    o.learnedPrefetch === false ? undefined : { proxy: o.proxy, name: o.name, manifestDigest: fetched.manifestDigest, params: fetched.params, fetchImpl: http.fetch, log: o.log };
  // Asked for while the mount is set up; awaited only once it is up.
  const learned = learnedFrom ? learnedReads(learnedFrom) : Promise.resolve([]);
  const firstReads = learnedFrom && new FirstReads(learnedFrom);
  let cache: ChunkCache;
  try {
    cache = await ChunkCache.open(o.cacheDir, { maxBytes: o.cacheMaxBytes });
    if (o.recordFile) recorder = await PrefetchRecorder.create(o.recordFile, bootstrap);
    for (const source of o.prefetch ?? []) {
      if (source === "all") {
        phases.push({ chunks: allChunks(bootstrap), quietMs: ALL_AFTER_QUIET_MS });
        continue;
      }
      const list = await readPrefetchList(source, bootstrap);
      if (list.unknown > 0) o.log(`${list.unknown} chunks of ${source} are not in this image`);
      phases.push({ chunks: list.chunks, quietMs: 0, followsReads: true });
    }
  } catch (err) {
    return abandon(err as Error);
  }
  let prefetcher: Prefetcher | undefined; // starts once the mount is up
  const onChunkRead = (i: number) => {
    recorder?.saw(i);
    firstReads?.saw(chunkHex(bootstrap, i));
    prefetcher?.sawRead(i);
  };
  const reader = new LazyReader(bootstrap, cache, fetcher, { nearbyBytes: o.nearbyBytes, nearbyMinRoundTripMs: o.nearbyMinRoundTripMs, programPrefetchBytes: o.programPrefetchBytes, onChunkRead });

  const fuse = await (unserved
    ? unserved.then((u) => u.serve({ bootstrap, reader, readTimeoutMs: o.timeoutMs }))
    : import("./fuse-fs.ts").then((f) => f.mountImage({ bootstrap, reader, mountpoint: lower, readTimeoutMs: o.timeoutMs }))
  ).catch((err: Error) => abandon(new Error(`cannot mount at ${lower}: ${err.message}`)));
  if (o.overlayDir) {
    const upper = join(resolve(o.overlayDir), "upper");
    const work = join(resolve(o.overlayDir), "work");
    await mkdir(upper, { recursive: true });
    await mkdir(work, { recursive: true });
    await mkdir(mountpoint, { recursive: true });
    try {
      await run("mount", ["-t", "overlay", "overlay", "-o", `lowerdir=${lower},upperdir=${upper},workdir=${work}`, mountpoint]);
    } catch (err) {
      await fuse.unmount();
      await closeHttp();
      throw new Error(`overlay mount failed: ${(err as { stderr?: string }).stderr?.trim() || (err as Error).message}`);
    }
  }

  trace("mounted");

  const writeStats = async () => {
    if (!o.statsFile) return;
    const stats = {
      params: fetched.params,
      bytesFetched: fetcher.stats.bytesFetched,
      chunksFetched: fetcher.stats.chunksFetched,
      requests: fetcher.stats.requests,
      cacheHits: reader.stats.cacheHits,
      bytesRead: reader.stats.bytesRead,
      errors: fetcher.stats.errors,
      ...(prefetcher && { prefetchedChunks: prefetcher.stats.chunks, prefetchedBytes: prefetcher.stats.bytes, prefetchDone: prefetcher.stats.done }),
      ...(recorder && { recordedChunks: recorder.count }),
      ...(firstReads && { learnedChunks: learnedChunks.length, firstReadChunks: firstReads.count }),
    };
    const tmp = `${o.statsFile}.tmp`;
    await writeFile(tmp, JSON.stringify(stats) + "\n");
    await rename(tmp, o.statsFile);
  };
  // The learned list runs ahead of the reads, before any list given by hand.
  const learnedChunks = chunksIn(bootstrap, await learned);
  trace("learned-list", { chunks: learnedChunks.length });
  if (learnedChunks.length > 0) {
    phases.unshift({ chunks: learnedChunks, quietMs: 0, followsReads: true });
    reader.followLearnedList(() => prefetcher?.offTrack ?? true);
  }
  prefetcher = phases.length > 0 ? new Prefetcher(bootstrap, cache, fetcher, { idle: (quietMs) => reader.foregroundIdle(quietMs) }, phases, { bytesPerSecond: o.prefetchBytesPerSecond, log: o.log }) : undefined;
  // The stats file is written once the prefetch has started: its chunks are on the critical path.
  trace("prefetch-start");
  prefetcher?.start();
  await writeStats();
  const timer = setInterval(() => {
    void writeStats().catch(() => {});
    void recorder?.flush().catch((err: Error) => o.log(`prefetch list: ${err.message}`));
  }, 1000);

  return {
    manifestDigest: fetched.manifestDigest,
    stop: async () => {
      clearInterval(timer);
      if (o.overlayDir) await unmountPath(mountpoint).catch((err) => o.log(`overlay unmount: ${(err as Error).message}`));
      const prefetchStopped = prefetcher?.stop();
      await fuse.unmount();
      await firstReads?.report();
      await closeHttp(); // ends prefetch requests in flight
      await prefetchStopped;
      await recorder?.flush().catch((err: Error) => o.log(`prefetch list: ${err.message}`));
      await writeStats();
    },
  };
}
