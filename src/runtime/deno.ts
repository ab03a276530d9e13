// Deno entry: the shared app on Deno.serve over the filesystem store (fs-server.ts), one HTTP client
// per upstream that has its own CA bundle, and the Node pool's upstream timeouts, which Deno's
// fetch lacks. With `tls`, https (deno-tls.ts), the certificate reloaded when it changes
// (tls-reload.ts). /metrics on a plain-http listener of its own (src/http/ops.ts). `deno task serve`
// starts it through the skiff command (src/cli/deno.ts).
// Type-checked by `deno check`, not by the Node tsc projects.
import type { UpstreamConfig } from "../config/config.ts";
import { opsHandler } from "../http/ops.ts";
import { UPSTREAM_TIMEOUTS, withTimeouts } from "../util/fetch-timeouts.ts";
import { within } from "../util/sleep.ts";
import { denoTlsServer, type DenoTlsServer } from "./deno-tls.ts";
import { fsApp, serverUrl, type RunningServer, type ServerOptions } from "./fs-server.ts";
import { readTlsPair } from "./tls-pair.ts";
import { watchTlsPair } from "./tls-reload.ts";

/** A listener: where it is, and its graceful stop (stop accepting, let requests in flight finish). */
interface Listening {
  url: string;
  close(): Promise<void>;
}

export async function startDenoServer(opts: ServerOptions): Promise<RunningServer> {
  // A certificate that can't be served stops the start before anything else is set up.
  const pair = opts.tls && (await readTlsPair(opts.tls));
  // Upstreams with a CA bundle get a client that trusts it (on top of the system roots); the others
  // share the default client.
  const clients = new Map<string, Deno.HttpClient>();
  const fetchFor = (upstream: UpstreamConfig): typeof fetch => {
    if (!upstream.ca) return withTimeouts(fetch, UPSTREAM_TIMEOUTS);
    let client = clients.get(upstream.prefix);
    if (!client) {
      client = Deno.createHttpClient({ caCerts: [upstream.ca] });
      clients.set(upstream.prefix, client);
    }
    const own = client;
    return withTimeouts(((input: RequestInfo | URL, init?: RequestInit) => fetch(input, { ...init, client: own })) as typeof fetch, UPSTREAM_TIMEOUTS);
  };
  const skiff = await fsApp(opts, fetchFor);

  let inFlight = 0;
  const done = () => void inFlight--;
  const handler: Deno.ServeHandler = (request, info) => {
    inFlight++;
    info.completed.then(done, done); // rejects when the client went away first
    return skiff.app.fetch(request);
  };
  let https: DenoTlsServer | undefined;
  let publicSide: Listening | undefined;
  let ops: Listening | null = null;
  try {
    if (pair) {
      const tls = (https = denoTlsServer(opts.host, opts.port, pair, handler));
      publicSide = { url: serverUrl(tls.hostname, tls.port, "https"), close: () => tls.close() };
    } else publicSide = await serve(opts.host, opts.port, handler);
    if (opts.metrics) ops = await serve(opts.metrics.host, opts.metrics.port, opsHandler(skiff));
  } catch (err) {
    // Neither a listener nor the sweeps' timer may outlive a failed start: they would keep the process running.
    await publicSide?.close();
    skiff.stopSweeps();
    throw err;
  }
  const log = opts.log ?? (() => {});
  const reloader = https && pair && watchTlsPair(opts.tls!, pair, (next) => https.setPair(next), log);
  if (pair) log(`TLS certificate ${pair.summary}`);
  const started = publicSide;
  return {
    ...skiff,
    url: started.url,
    metricsUrl: ops?.url,
    inFlight: () => inFlight,
    reloadTls: reloader ? reloader.reload : undefined,
    close: async (timeoutMs = Infinity) => {
      skiff.health.stopping();
      if (reloader) reloader.stop();
      // Deno.serve's shutdown() stops accepting, closes idle connections and waits for the responses
      // in flight. Deno has no way to cut them: the caller exits the process when the time is up.
      const stopped = Promise.all([started.close(), ops?.close()]);
      const cut = timeoutMs !== Infinity && (await within(timeoutMs, stopped)) === "timeout" ? inFlight : 0;
      if (cut === 0) await stopped;
      skiff.stopSweeps();
      for (const client of clients.values()) client.close();
      return { cut };
    },
  };
}

async function serve(hostname: string, port: number, handler: Deno.ServeHandler): Promise<Listening> {
  const listening = Promise.withResolvers<string>();
  const server = Deno.serve({ hostname, port, onListen: (addr) => listening.resolve(serverUrl(addr.hostname, addr.port)) }, handler);
  return { url: await listening.promise, close: () => server.shutdown() };
}
