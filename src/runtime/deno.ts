// Deno entry: the shared app on Deno.serve over the filesystem store (fs-server.ts), one HTTP client
// per upstream that has its own CA bundle, and the Node pool's upstream timeouts, which Deno's
// fetch lacks. `deno task serve` starts it through the skiff command (src/cli/deno.ts).
// Type-checked by `deno check`, not by the Node tsc projects.
import type { UpstreamConfig } from "../config/config.ts";
import { UPSTREAM_TIMEOUTS, withTimeouts } from "../util/fetch-timeouts.ts";
import { fsApp, serverUrl, type RunningServer, type ServerOptions } from "./fs-server.ts";

export async function startDenoServer(opts: ServerOptions): Promise<RunningServer> {
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
