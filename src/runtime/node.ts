// Node entry (`skiff serve`): the shared app on node:http over the filesystem store (fs-server.ts),
// cached blob ranges answered by the shortcut first (node-shortcut.ts), an undici connection pool
// per upstream, and chunks deflated on worker threads (node-chunk-encoder.ts). With `tls`, https
// with HTTP/2 (node-tls.ts), the certificate reloaded when it changes (tls-reload.ts).
import { createServer } from "node:http";
import type { AddressInfo, Server } from "node:net";
import { Agent, fetch as undiciFetch } from "undici";
import type { UpstreamConfig } from "../config/config.ts";
import { UPSTREAM_TIMEOUTS } from "../util/fetch-timeouts.ts";
import { fsApp, serverUrl, type RunningServer, type ServerOptions } from "./fs-server.ts";
import { nodeChunkEncoder } from "./node-chunk-encoder.ts";
import { nodeListener } from "./node-shortcut.ts";
import { tlsServer, type NodeRequestListener } from "./node-tls.ts";
import { readTlsPair } from "./tls-pair.ts";
import { watchTlsPair } from "./tls-reload.ts";

export type { RunningServer, ServerOptions };

export async function startNodeServer(opts: ServerOptions): Promise<RunningServer> {
  // A certificate that can't be served stops the start before anything else is set up.
  const pair = opts.tls && (await readTlsPair(opts.tls));
  // One connection pool per upstream, trusting its CA bundle when it has one. bodyTimeout is the
  // longest silence between two chunks, not a limit on a whole (large) blob.
  const dispatchers = new Map<string, Agent>();
  const fetchFor = (upstream: UpstreamConfig) => {
    let dispatcher = dispatchers.get(upstream.prefix);
    if (!dispatcher) {
      const connect = upstream.ca ? { ca: upstream.ca, timeout: 10_000 } : { timeout: 10_000 };
      dispatcher = new Agent({ connections: 64, headersTimeout: UPSTREAM_TIMEOUTS.headersMs, bodyTimeout: UPSTREAM_TIMEOUTS.idleMs, connect });
      dispatchers.set(upstream.prefix, dispatcher);
    }
    const pool = dispatcher;
    return ((input: URL, init: RequestInit) => undiciFetch(input, { ...(init as object), dispatcher: pool })) as unknown as typeof fetch;
  };
  // Chunks deflated on worker threads, beside the thread that reads the layer.
  const skiff = await fsApp(opts, fetchFor, nodeChunkEncoder());

  const listener = nodeListener(skiff);
  const https = pair && tlsServer(pair, listener);
  const { server, close } = https ?? httpServer(listener);
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port, opts.host, () => resolve());
  });
  const log = opts.log ?? (() => {});
  const reloader = https && watchTlsPair(opts.tls!, pair, (next) => https.setPair(next), log);
  if (pair) log(`TLS certificate ${pair.summary}`);
  const address = server.address() as AddressInfo;
  return {
    ...skiff,
    url: serverUrl(address.address, address.port, https ? "https" : "http"),
    reloadTls: reloader?.reload,
    close: async () => {
      reloader?.stop();
      await close();
      skiff.stopSweeps();
      await Promise.all([...dispatchers.values()].map((d) => d.close()));
    },
  };
}

function httpServer(listener: NodeRequestListener): { server: Server; close(): Promise<void> } {
  const server = createServer(listener);
  return {
    server,
    close: () => {
      // Idle keep-alive connections are dropped now rather than after their timeout.
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      return closed;
    },
  };
}
