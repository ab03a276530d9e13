// Node entry: the shared app on @hono/node-server, a filesystem store, node:crypto hashing and an
// undici connection pool for the upstream.
import { serve } from "@hono/node-server";
import type { AddressInfo } from "node:net";
import { Agent, fetch as undiciFetch } from "undici";
import { nodeHasher } from "../hash/node.ts";
import { createApp, type SkiffApp } from "../http/app.ts";
import type { Credentials } from "../oci/upstream.ts";
import { FsStore } from "../store/fs.ts";
import { useNodeGunzip } from "./node-gunzip.ts";

export interface NodeServerOptions {
  upstream: string;
  credentials?: Credentials;
  allowHosts?: string[];
  registryAliases?: string[];
  host: string;
  port: number;
  dataDir: string;
  tagTtlSeconds: number;
  maxLayerBytes?: number;
  convertWaitSeconds?: number;
  defaultPlatform?: string;
  log?: (message: string) => void;
}

export interface RunningServer extends SkiffApp {
  url: string;
  close(): Promise<void>;
}

export async function startNodeServer(opts: NodeServerOptions): Promise<RunningServer> {
  useNodeGunzip();
  const store = await new FsStore(opts.dataDir).init();
  // bodyTimeout is the longest silence between two chunks, not a limit on a whole (large) blob.
  const dispatcher = new Agent({ connections: 64, headersTimeout: 30_000, bodyTimeout: 60_000, connectTimeout: 10_000 });
  const upstreamFetch = ((input: URL, init: RequestInit) => undiciFetch(input, { ...(init as object), dispatcher })) as unknown as typeof fetch;

  const skiff = createApp({
    upstream: { url: opts.upstream, credentials: opts.credentials, allowHosts: opts.allowHosts, fetch: upstreamFetch },
    store,
    hasher: nodeHasher,
    tagTtlSeconds: opts.tagTtlSeconds,
    maxLayerBytes: opts.maxLayerBytes,
    convertWaitSeconds: opts.convertWaitSeconds,
    defaultPlatform: opts.defaultPlatform,
    registryAliases: opts.registryAliases,
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
      await dispatcher.close();
    },
  };
}
