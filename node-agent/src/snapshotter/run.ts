// `skiff snapshotter`: the containerd remote snapshotter of a node. The gRPC service and the
// snapshot metadata live in this process; the FUSE mounts of lazy layers live in the mounts
// daemon, which this process adopts or starts, so a restart of either keeps containers running
// (see docs/kubernetes.md). Metrics in Prometheus' text format on their own listener.
import { createServer, type Server } from "node:http";
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { Metrics } from "../../../src/util/metrics.ts";
import { keeperSocketIn } from "../fuse/keeper.ts";
import { proxyHttp, type ProxyHttpOptions } from "../proxy-http.ts";
import { serveSnapshots } from "./grpc-service.ts";
import { LazyLayers } from "./lazy-layers.ts";
import { MountsClient } from "./mounts-client.ts";
import { runMountsDaemon } from "./mounts-daemon.ts";
import { Snapshotter } from "./snapshotter.ts";

export interface SnapshotterOptions extends ProxyHttpOptions {
  /** The skiff proxy; without one every layer is unpacked normally. */
  proxy?: string;
  address: string;
  root: string;
  cacheMaxBytes: number;
  /** `host:port` for /metrics, or undefined for none. */
  metricsAddress?: string;
  timeoutMs: number;
  convertTimeoutMs: number;
  /** Learned prefetch (see learned-reads.ts); default on. */
  learnedPrefetch?: boolean;
  /** Program prefetch (see lazy-reader.ts); default on. */
  programPrefetch?: boolean;
  /** Fetch the rest of each lazy layer once its image's reads pause (see mounts-daemon.ts); default off. */
  fillLayers?: boolean;
  /** The mounts daemon reads its FUSE connections itself (default: where the kernel and a shell allow it; see mounts-daemon.ts). */
  direct?: boolean;
  codec?: string;
  chunkSize?: string;
  platform?: string;
  /** How to start the mounts daemon: argv after node. */
  daemonArgs: string[];
  /** How to start the FUSE keeper: argv after node. */
  keeperArgs: string[];
  log: (message: string) => void;
}

export interface RunningSnapshotter {
  close(): Promise<void>;
}

const WATCHDOG_MS = 2_000;

export const daemonSocket = (root: string) => join(root, "mounts.sock");

export async function runSnapshotter(o: SnapshotterOptions): Promise<RunningSnapshotter> {
  await mkdir(o.root, { recursive: true });
  const metrics = new Metrics({ skiff_snapshotter_layers_total: "layers prepared: kind lazy, or ordinary (unpacked by containerd) with the reason" });
  const mounts = new MountsClient({ socket: daemonSocket(o.root), daemonArgs: o.daemonArgs, logFile: join(o.root, "mounts-daemon.log"), log: o.log });
  const http = o.proxy ? await proxyHttp(o) : undefined;
  const remote =
    o.proxy && http
      ? new LazyLayers({
          proxy: o.proxy,
          fetchImpl: http.fetch,
          mounts,
          convertTimeoutMs: o.convertTimeoutMs,
          codec: o.codec,
          chunkSize: o.chunkSize,
          platform: o.platform,
          log: o.log,
          count: (outcome, reason) => metrics.inc("skiff_snapshotter_layers_total", reason ? { kind: outcome, reason } : { kind: outcome }),
        })
      : undefined;
  const snapshotter = await Snapshotter.open(o.root, remote);
  // Adopt the daemon that holds the lazy layers' mounts (or start it, remounting its table). With a
  // proxy it is started now rather than at the first lazy layer, off a pull's critical path.
  if (snapshotter.records().some(([, r]) => r.lazy)) {
    const status = await mounts.ensure();
    o.log(`mounts daemon ${status.pid}: ${status.mounts.length} layers mounted`);
  } else if (o.proxy) {
    void mounts.ensure().catch((err: Error) => o.log(`mounts daemon: ${err.message}`));
  }
  // A mounts daemon that died is started again (it mounts its table again) while lazy layers exist.
  const watchdog = setInterval(() => {
    if (snapshotter.records().some(([, r]) => r.lazy)) mounts.ensure().catch((err: Error) => o.log(`mounts daemon: ${err.message}`));
  }, WATCHDOG_MS);
  watchdog.unref();
  const grpc = await serveSnapshots(snapshotter, o.address, o.log);
  const metricsServer = o.metricsAddress ? await serveMetrics(o.metricsAddress, async () => metricsText(metrics, snapshotter, mounts)) : undefined;
  return {
    close: async () => {
      clearInterval(watchdog);
      await grpc.close();
      await new Promise<void>((resolve) => (metricsServer ? metricsServer.close(() => resolve()) : resolve()));
      await http?.close();
    },
  };
}

/** The mounts daemon's own process: serves until SIGTERM or SIGINT. */
export async function runDaemon(o: SnapshotterOptions): Promise<void> {
  const daemon = await runMountsDaemon({ ...o, socket: daemonSocket(o.root), cacheDir: join(o.root, "chunks"), keeperSocket: keeperSocketIn(o.root) });
  await new Promise<void>((resolve) => {
    process.once("SIGINT", resolve);
    process.once("SIGTERM", resolve);
  });
  // The mounts stay with the FUSE keeper for the next daemon.
  const closed = daemon.close().catch((err: Error) => o.log(`closing: ${err.message}`));
  await Promise.race([closed, new Promise((r) => setTimeout(r, 10_000).unref())]);
  process.exit(0);
}

async function metricsText(metrics: Metrics, snapshotter: Snapshotter, mounts: MountsClient): Promise<string> {
  const records = snapshotter.records();
  const lines = [metrics.render().trimEnd(), "# TYPE skiff_snapshotter_snapshots gauge"];
  for (const kind of ["active", "view", "committed"]) lines.push(`skiff_snapshotter_snapshots{kind="${kind}"} ${records.filter(([, r]) => r.kind === kind).length}`);
  const status = records.some(([, r]) => r.lazy) ? await mounts.ensure().catch(() => undefined) : undefined;
  if (status) {
    const c = status.cache;
    lines.push(
      "# TYPE skiff_snapshotter_chunk_cache_bytes gauge",
      `skiff_snapshotter_chunk_cache_bytes ${c.bytes}`,
      `skiff_snapshotter_chunk_cache_max_bytes ${c.maxBytes}`,
      `skiff_snapshotter_chunk_cache_evictions_total ${c.evictions}`,
    );
    // Per image: its mounted layers, bytes fetched, cache hits, fetch latency (a summary's sum and
    // count), and what background prefetch did.
    const byImage = new Map<string, { mounts: number; bytes: number; hits: number; errors: number; fetches: number; ms: number; prefetched: number; prefetchDone: number }>();
    for (const m of status.mounts) {
      const t = byImage.get(m.image) ?? { mounts: 0, bytes: 0, hits: 0, errors: 0, fetches: 0, ms: 0, prefetched: 0, prefetchDone: 0 };
      t.mounts++;
      t.prefetched += m.prefetchedChunks;
      if (m.prefetchDone) t.prefetchDone++;
      t.bytes += m.bytesFetched;
      t.hits += m.cacheHits;
      t.errors += m.errors;
      t.fetches += m.fetches;
      t.ms += m.fetchMs;
      byImage.set(m.image, t);
    }
    const series: [string, string, (t: NonNullable<ReturnType<typeof byImage.get>>) => number][] = [
      ["skiff_snapshotter_mounts", "gauge", (t) => t.mounts],
      ["skiff_snapshotter_fetched_bytes_total", "counter", (t) => t.bytes],
      ["skiff_snapshotter_chunk_cache_hits_total", "counter", (t) => t.hits],
      ["skiff_snapshotter_fetch_errors_total", "counter", (t) => t.errors],
      ["skiff_snapshotter_fetch_seconds_count", "counter", (t) => t.fetches],
      ["skiff_snapshotter_fetch_seconds_sum", "counter", (t) => t.ms / 1000],
      ["skiff_snapshotter_prefetched_chunks_total", "counter", (t) => t.prefetched],
      ["skiff_snapshotter_prefetch_done_layers", "gauge", (t) => t.prefetchDone],
    ];
    for (const [name, type, value] of series) {
      lines.push(`# TYPE ${name} ${type}`);
      for (const [image, t] of byImage) lines.push(`${name}{image=${JSON.stringify(image)}} ${value(t)}`);
    }
  }
  return `${lines.filter(Boolean).join("\n")}\n`;
}

async function serveMetrics(address: string, text: () => Promise<string>): Promise<Server> {
  const colon = address.lastIndexOf(":");
  const server = createServer((req, res) => {
    if (req.url !== "/metrics") {
      res.writeHead(404).end();
      return;
    }
    text().then(
      (body) => res.writeHead(200, { "content-type": "text/plain; version=0.0.4" }).end(body),
      (err: Error) => res.writeHead(500).end(err.message),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(Number(address.slice(colon + 1)), address.slice(0, colon).replace(/^\[|\]$/g, ""), () => resolve());
  });
  return server;
}
