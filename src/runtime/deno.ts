// Deno entry: `deno task serve` (same flags as `skiff serve`) runs the shared app on Deno.serve, with
// the filesystem store, node:crypto hashing and node:zlib gunzip through Deno's node: compatibility
// and one HTTP client per upstream that has its own CA bundle; `deno task skiff CMD` runs the other
// CLI commands. Type-checked by `deno check`, not by the Node tsc projects.
import { describeConfig, parseServeOptions, serveHelp } from "../cli/serve-options.ts";
import { UsageError } from "../cli/args.ts";
import type { UpstreamConfig } from "../config/config.ts";
import { nodeHasher } from "../hash/node.ts";
import { createApp } from "../http/app.ts";
import { FsStore } from "../store/fs.ts";
import { UPSTREAM_TIMEOUTS, withTimeouts } from "../util/fetch-timeouts.ts";
import { nodeGunzip } from "./node-gunzip.ts";

/** `serve ARGS` on Deno.serve; any other command is the Node CLI's, run under Deno. */
async function run(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (command !== "serve") return (await import("../cli/main.ts")).main(argv);
  try {
    return await serve(rest);
  } catch (err) {
    // As the Node CLI: a usage mistake is one line and status 2, any other failure one line and 1.
    console.error(`skiff serve: ${err instanceof Error ? err.message : String(err)}`);
    return err instanceof UsageError ? 2 : 1;
  }
}

async function serve(args: string[]): Promise<number> {
  const opts = parseServeOptions(args, Deno.env.toObject());
  if (!opts) {
    console.log(serveHelp);
    return 0;
  }
  if (opts.check) {
    console.log(describeConfig(opts.config));
    return 0;
  }
  const log = (message: string) => console.error(`${new Date().toISOString()} ${message}`);

  const store = await new FsStore(opts.dataDir).init();
  // Upstreams with a CA bundle get a client that trusts it (on top of the system roots); the others
  // share the default client.
  // Deno's fetch has no header or idle timeouts of its own: the same limits as the Node entry's pool.
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
  const skiff = createApp({
    config: opts.config,
    store,
    hasher: nodeHasher,
    // Under Deno too node:zlib is several times faster than the portable fflate decoder (docs/deploy.md).
    gunzip: nodeGunzip,
    fetchFor,
    ...opts.settings,
    log,
  });

  const listening = Promise.withResolvers<void>();
  const server = Deno.serve(
    {
      hostname: opts.host,
      port: opts.port,
      onListen: ({ hostname, port }) => {
        const host = hostname.includes(":") ? `[${hostname}]` : hostname;
        console.log(`skiff listening on http://${host}:${port}`);
        listening.resolve();
      },
    },
    (request) => skiff.app.fetch(request),
  );
  await listening.promise;
  for (const line of describeConfig(opts.config).split("\n")) log(line);
  log(`store ${opts.dataDir}`);

  const stop = Promise.withResolvers<void>();
  const signals = ["SIGINT", "SIGTERM"] as const;
  for (const s of signals) Deno.addSignalListener(s, stop.resolve);
  await stop.promise;
  // A second signal kills as usual; shutdown() stops accepting and waits for requests in flight.
  for (const s of signals) Deno.removeSignalListener(s, stop.resolve);
  await server.shutdown();
  for (const client of clients.values()) client.close();
  return 0;
}

// The exit status is set, not forced: a conversion still running after shutdown may finish first,
// as on Node.
if (import.meta.main) Deno.exitCode = await run(Deno.args);
