// Node entry (`skiff serve`): the shared app on node:http over the filesystem store (fs-server.ts),
// cached blob ranges and warm lazy reads answered by the shortcut first (node-shortcut.ts), an
// undici connection pool per upstream, and chunks deflated on worker threads (node-chunk-encoder.ts). With `tls`, https
// with HTTP/2 (node-tls.ts), the certificate reloaded when it changes (tls-reload.ts). /metrics on a
// plain-http listener of its own (src/http/ops.ts); both stop gracefully (node-drain.ts).
import { getRequestListener } from "@hono/node-server";
import type { AddressInfo, Server } from "node:net";
import { Agent, fetch as undiciFetch } from "undici";
import type { UpstreamConfig } from "../config/config.ts";
import { UPSTREAM_TIMEOUTS } from "../util/fetch-timeouts.ts";
import { opsHandler } from "../http/ops.ts";
import { fsApp, serverUrl, type RunningServer, type ServerOptions } from "./fs-server.ts";
import { nodeChunkEncoder } from "./node-chunk-encoder.ts";
import { counted, httpServer, stopWithin } from "./node-drain.ts";
import { tuneForServing } from "./node-conversion-settings.ts";
import { nodeListener } from "./node-shortcut.ts";
import { tlsServer } from "./node-tls.ts";
import { readTlsPair } from "./tls-pair.ts";
import { watchTlsPair } from "./tls-reload.ts";

export type { RunningServer, ServerOptions };

export async function startNodeServer(opts: ServerOptions): Promise<RunningServer> {
  // Set now that the modules are loaded: given at start, any V8 flag costs Node its shipped code cache.
  tuneForServing();
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

  const { listener, inFlight } = counted(nodeListener(skiff));
  const https = pair && tlsServer(pair, listener);
  const publicSide = https ?? httpServer(listener);
  const opsSide = opts.metrics ? httpServer(getRequestListener(opsHandler(skiff))) : null;
  try {
    await listen(publicSide.server, opts.port, opts.host);
    if (opsSide && opts.metrics) await listen(opsSide.server, opts.metrics.port, opts.metrics.host);
  } catch (err) {
    // Neither listener nor the sweeps' timer may outlive a failed start: they would keep the process running.
    await Promise.all([stopWithin(publicSide, inFlight, 0), opsSide && stopWithin(opsSide, () => 0, 0)]);
    skiff.stopSweeps();
    throw err;
  }
  const log = opts.log ?? (() => {});
  const reloader = https && watchTlsPair(opts.tls!, pair, (next) => https.setPair(next), log);
  if (pair) log(`TLS certificate ${pair.summary}`);
  return {
    ...skiff,
    url: urlOf(publicSide.server, https ? "https" : "http"),
    metricsUrl: opsSide ? urlOf(opsSide.server, "http") : undefined,
    inFlight,
    reloadTls: reloader?.reload,
    close: async (timeoutMs) => {
      skiff.health.stopping();
      reloader?.stop();
      const [cut] = await Promise.all([stopWithin(publicSide, inFlight, timeoutMs), opsSide && stopWithin(opsSide, () => 0, timeoutMs)]);
      skiff.stopSweeps();
      // Only work no response waits for still uses them (a conversion its client gave up on).
      await Promise.all([...dispatchers.values()].map((d) => d.destroy()));
      return { cut };
    },
  };
}

function listen(server: Server, port: number, host: string): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      server.off("error", reject);
      resolve();
    });
  });
}

function urlOf(server: Server, scheme: "http" | "https"): string {
  const address = server.address() as AddressInfo;
  return serverUrl(address.address, address.port, scheme);
}
