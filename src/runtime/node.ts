// Node entry: the shared app on @hono/node-server, a filesystem store, node:crypto hashing and an
// undici connection pool for the upstream.
import { serve } from "@hono/node-server";
import type { AddressInfo } from "node:net";
import { Agent, fetch as undiciFetch } from "undici";
import { nodeHasher } from "../hash/node.ts";
import { createApp, type ServeSettings, type SkiffApp } from "../http/app.ts";
import type { SkiffConfig, UpstreamConfig } from "../config/config.ts";
import { FsStore } from "../store/fs.ts";
import { useNodeGunzip } from "./node-gunzip.ts";

export interface NodeServerOptions {
  config: SkiffConfig;
  host: string;
  port: number;
  dataDir: string;
  app?: ServeSettings;
  log?: (message: string) => void;
}

export interface RunningServer extends SkiffApp {
  url: string;
  close(): Promise<void>;
}

export async function startNodeServer(opts: NodeServerOptions): Promise<RunningServer> {
  useNodeGunzip();
  const store = await new FsStore(opts.dataDir).init();
  // One connection pool per upstream, trusting its CA bundle when it has one. bodyTimeout is the
  // longest silence between two chunks, not a limit on a whole (large) blob.
  const dispatchers = new Map<string, Agent>();
  const fetchFor = (upstream: UpstreamConfig) => {
    let dispatcher = dispatchers.get(upstream.prefix);
    if (!dispatcher) {
      const connect = upstream.ca ? { ca: upstream.ca, timeout: 10_000 } : { timeout: 10_000 };
      dispatcher = new Agent({ connections: 64, headersTimeout: 30_000, bodyTimeout: 60_000, connect });
      dispatchers.set(upstream.prefix, dispatcher);
    }
    const pool = dispatcher;
    return ((input: URL, init: RequestInit) => undiciFetch(input, { ...(init as object), dispatcher: pool })) as unknown as typeof fetch;
  };

  const skiff = createApp({
    config: opts.config,
    store,
    hasher: nodeHasher,
    fetchFor,
    ...opts.app,
    log: opts.log,
  });

  const server = await new Promise<ReturnType<typeof serve>>((resolve, reject) => {
    const s = serve({ fetch: skiff.app.fetch, port: opts.port, hostname: opts.host }, () => resolve(s));
    s.once("error", reject);
  });
  const address = server.address() as AddressInfo;
  const host = address.family === "IPv6" ? `[${address.address}]` : address.address;
  return {
    ...skiff,
    url: `http://${host}:${address.port}`,
    close: async () => {
      // Stop accepting, let requests in flight finish, and drop idle keep-alive connections now
      // rather than after their timeout.
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      (server as import("node:http").Server).closeIdleConnections?.();
      await closed;
      await Promise.all([...dispatchers.values()].map((d) => d.close()));
    },
  };
}
