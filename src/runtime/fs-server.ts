// What the Node and Deno entries share: the app over the filesystem store with node:crypto hashing
// and node:zlib gunzip (on Deno through its node: compatibility, still several times faster than
// the portable decoder: docs/deploy.md), started with `skiff serve`'s options.
import type { ChunkEncoder } from "../convert/chunk-encoder.ts";
import type { SkiffConfig, UpstreamConfig } from "../config/config.ts";
import type { AppSettings } from "../config/serve-settings.ts";
import { nodeHasher } from "../hash/node.ts";
import { createApp, type SkiffApp } from "../http/app.ts";
import { FsStore } from "../store/fs.ts";
import { nodeGunzip } from "./node-gunzip.ts";
import { nodeGzip } from "./node-gzip.ts";

export interface ServerOptions {
  config: SkiffConfig;
  host: string;
  port: number;
  dataDir: string;
  settings?: Partial<AppSettings>;
  log?: (message: string) => void;
}

export interface RunningServer extends SkiffApp {
  url: string;
  /** Stops accepting, lets requests in flight finish, then closes the upstream connections. */
  close(): Promise<void>;
}

/** `chunkEncoder`: the entry's chunk encoding (Node's worker threads), if any. */
export async function fsApp(opts: ServerOptions, fetchFor: (upstream: UpstreamConfig) => typeof fetch, chunkEncoder?: ChunkEncoder): Promise<SkiffApp> {
  const store = await new FsStore(opts.dataDir).init();
  return createApp({ config: opts.config, store, hasher: nodeHasher, gunzip: nodeGunzip, gzip: nodeGzip, chunkEncoder, fetchFor, ...opts.settings, log: opts.log });
}

/** The URL of a server listening at `address` (an IPv6 one goes in brackets). */
export function serverUrl(address: string, port: number): string {
  return `http://${address.includes(":") ? `[${address}]` : address}:${port}`;
}
