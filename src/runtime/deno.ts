// Deno entry: the shared app on Deno.serve over the filesystem store (fs-server.ts), one HTTP client
// per upstream that has its own CA bundle, and the Node pool's upstream timeouts, which Deno's
// fetch lacks. With `tls`, https (deno-tls.ts), the certificate reloaded when it changes
// (tls-reload.ts). `deno task serve` starts it through the skiff command (src/cli/deno.ts).
// Type-checked by `deno check`, not by the Node tsc projects.
import type { UpstreamConfig } from "../config/config.ts";
import { UPSTREAM_TIMEOUTS, withTimeouts } from "../util/fetch-timeouts.ts";
import { denoTlsServer } from "./deno-tls.ts";
import { fsApp, serverUrl, type RunningServer, type ServerOptions } from "./fs-server.ts";
import { readTlsPair } from "./tls-pair.ts";
import { watchTlsPair } from "./tls-reload.ts";

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
  if (pair) {
    const https = denoTlsServer(opts.host, opts.port, pair, (request) => skiff.app.fetch(request));
    const log = opts.log ?? (() => {});
    const reloader = watchTlsPair(opts.tls!, pair, (next) => https.setPair(next), log);
    log(`TLS certificate ${pair.summary}`);
    return {
      ...skiff,
      url: serverUrl(https.hostname, https.port, "https"),
      reloadTls: reloader.reload,
      close: async () => {
        reloader.stop();
        await https.close();
        skiff.stopSweeps();
        for (const client of clients.values()) client.close();
      },
    };
  }

  const listening = Promise.withResolvers<string>();
  const server = Deno.serve(
    { hostname: opts.host, port: opts.port, onListen: ({ hostname, port }) => listening.resolve(serverUrl(hostname, port)) },
    (request) => skiff.app.fetch(request),
  );
  return {
    ...skiff,
    url: await listening.promise,
    close: async () => {
      // shutdown() stops accepting and waits for requests in flight.
      await server.shutdown();
      skiff.stopSweeps();
      for (const client of clients.values()) client.close();
    },
  };
}
