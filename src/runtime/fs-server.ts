// What the Node and Deno entries share: the app over the filesystem store with node:crypto hashing
// and node:zlib gunzip (on Deno through its node: compatibility, still several times faster than
// the portable decoder: docs/deploy.md), started with `skiff serve`'s options.
import type { ChunkEncoder } from "../convert/chunk-encoder.ts";
import type { SkiffConfig, UpstreamConfig } from "../config/config.ts";
import type { AppSettings } from "../config/serve-settings.ts";
import { nodeHasher } from "../hash/node.ts";
import { createApp, type SkiffApp } from "../http/app.ts";
import { BoundedStore } from "../store/bounded.ts";
import { FsStore } from "../store/fs.ts";
import { garbageSummary, sweepGarbage, type Garbage } from "../store/gc.ts";
import { listAll, type ContentStore, type ListedObject } from "../store/store.ts";
import { nodeGunzip } from "./node-gunzip.ts";
import { nodeUnzstd } from "./node-zstd.ts";
import { nodeGzip } from "./node-gzip.ts";
import type { TlsFiles } from "./tls-pair.ts";

export interface ServerOptions {
  config: SkiffConfig;
  host: string;
  port: number;
  dataDir: string;
  /** Where the operator's listener serves /metrics and the health routes (src/http/ops.ts); none when absent. */
  metrics?: { host: string; port: number } | null;
  settings?: Partial<AppSettings>;
  /** Keep the store within this many bytes, evicting what has gone unused longest (no bound when absent). */
  maxStoreBytes?: number;
  /** Evict what has not been used for this long (never when absent). */
  maxAgeMs?: number;
  log?: (message: string) => void;
  /** Serve https with this certificate and key, read again when they change (tls-reload.ts). */
  tls?: TlsFiles;
}

/** The app over the filesystem store, and how to stop the store's periodic sweeps. */
export interface FsApp extends SkiffApp {
  stopSweeps(): void;
}

/** How often a running proxy sweeps its store (garbage, and content past --max-age). */
const SWEEP_EVERY_MS = 3600_000;
/** A running proxy's sweep leaves what was written this recently: a conversion between two commits. */
const SWEEP_GRACE_MS = 3600_000;

export interface RunningServer extends SkiffApp {
  url: string;
  /** The operator's listener, when there is one. */
  metricsUrl?: string;
  /** Requests being answered now, on the public port. */
  inFlight(): number;
  /**
   * Turns /readyz to 503, stops accepting, closes idle connections, lets the responses in flight
   * finish for up to `timeoutMs` (no limit by default) and cuts the rest, then drops the upstream
   * connections. Resolves with how many responses were cut.
   */
  close(timeoutMs?: number): Promise<{ cut: number }>;
  /** With `tls`: reads the certificate and key again now (SIGHUP); `why` goes in the log. */
  reloadTls?(why: string): Promise<void>;
}

/** `chunkEncoder`: the entry's chunk encoding (Node's worker threads), if any. */
export async function fsApp(opts: ServerOptions, fetchFor: (upstream: UpstreamConfig) => typeof fetch, chunkEncoder?: ChunkEncoder): Promise<FsApp> {
  const log = opts.log ?? (() => {});
  // No conversion runs yet: whatever a crash left unpublished is garbage now.
  const files = await new FsStore(opts.dataDir).init();
  // One walk of the store serves both the sweep and the bound's accounting.
  const listed = await listAll(files);
  const swept = new Set((await sweep(files, 0, log, listed)).map((g) => g.key));
  await files.removeEmptyDirectories();
  const store: ContentStore =
    opts.maxStoreBytes === undefined
      ? files
      : await BoundedStore.open(files, { maxBytes: opts.maxStoreBytes, maxAgeMs: opts.maxAgeMs, log, listed: listed.filter((o) => !swept.has(o.key)) });
  if (store instanceof BoundedStore) {
    const { bytes, objects } = store.usage();
    log(`store bounded at ${opts.maxStoreBytes} bytes: ${bytes} bytes in ${objects} objects${opts.maxAgeMs === undefined ? "" : `, evicted after ${opts.maxAgeMs / 1000} s unused`}`);
  }
  const timer = setInterval(() => {
    void (async () => {
      if (store instanceof BoundedStore) {
        const aged = await store.sweepAged();
        if (aged > 0) log(`store: evicted ${aged} unused for longer than --max-age`);
      }
      await sweep(store, SWEEP_GRACE_MS, log);
      await files.removeEmptyDirectories();
    })().catch((err: unknown) => log(`store sweep failed: ${(err as Error).message}`));
  }, SWEEP_EVERY_MS);
  const app = createApp({ config: opts.config, store, hasher: nodeHasher, gunzip: nodeGunzip, unzstd: nodeUnzstd(), gzip: nodeGzip, chunkEncoder, fetchFor, ...opts.settings, log: opts.log });
  return { ...app, stopSweeps: () => clearInterval(timer) };
}

async function sweep(store: ContentStore, graceMs: number, log: (message: string) => void, listed?: ListedObject[]): Promise<Garbage[]> {
  const garbage = await sweepGarbage(store, { graceMs, listed });
  if (garbage.length > 0) log(`store: ${garbageSummary(garbage)}`);
  return garbage;
}

/** The URL of a server listening at `address` (an IPv6 one goes in brackets). */
export function serverUrl(address: string, port: number, scheme: "http" | "https" = "http"): string {
  return `${scheme}://${address.includes(":") ? `[${address}]` : address}:${port}`;
}
