// `skiff serve`: the pull-through registry proxy, on Node (src/runtime/node.ts) or on the runtime
// whose skiff command brings its own server (Deno: src/cli/deno.ts).
import type { RunningServer, ServerOptions } from "../runtime/fs-server.ts";
import { readTlsPair } from "../runtime/tls-pair.ts";
import { describeConfig, parseServeOptions, serveHelp } from "./serve-options.ts";

export { serveHelp };

export type StartServer = (opts: ServerOptions) => Promise<RunningServer>;

const SIGNALS = ["SIGINT", "SIGTERM"] as const;
/** A second signal's exit status: 128 + its number, as a shell reports a process killed by it. */
const SIGNAL_EXIT = { SIGINT: 130, SIGTERM: 143 } as const;

export async function serveCommand(argv: string[], start?: StartServer): Promise<number> {
  const opts = parseServeOptions(argv, process.env);
  if (!opts) {
    console.log(serveHelp);
    return 0;
  }
  if (opts.check) {
    console.log(describeConfig(opts.config));
    // A renewed certificate can be checked before the running server is asked to take it.
    if (opts.tls) console.log(`TLS certificate ${(await readTlsPair(opts.tls)).summary}`);
    return 0;
  }
  const log = (message: string) => process.stderr.write(`${new Date().toISOString()} ${message}\n`);
  start ??= (await import("../runtime/node.ts")).startNodeServer;
  const server = await start({ ...opts, log });
  console.log(`skiff listening on ${server.url}`);
  if (server.metricsUrl) console.log(`skiff metrics on ${server.metricsUrl}`);
  for (const line of describeConfig(opts.config).split("\n")) log(line);
  log(`store ${opts.dataDir}`);

  // With TLS, SIGHUP reads the certificate and key again (the server logs what came of it).
  const reload = server.reloadTls && (() => void server.reloadTls!("SIGHUP"));
  if (reload) process.on("SIGHUP", reload);
  const signal = await new Promise<(typeof SIGNALS)[number]>((resolve) => {
    for (const s of SIGNALS) process.once(s, () => resolve(s));
  });
  // The reload stays: a SIGHUP during the drain must not kill the process by default.
  for (const s of SIGNALS) {
    process.on(s, () => {
      log(`${s} during shutdown: exiting now`);
      process.exit(SIGNAL_EXIT[s]);
    });
  }
  const timeout = opts.shutdownTimeoutSeconds;
  log(`${signal}: shutting down; waiting up to ${timeout} s for ${server.inFlight()} response(s) in flight`);
  const { cut } = await server.close(timeout * 1000);
  log(cut === 0 ? "shutdown: every response in flight finished" : `shutdown: cut ${cut} response(s) still in flight after ${timeout} s`);
  // Work no response waits for (a conversion whose client stopped waiting) ends here: it has
  // published nothing half-made, and the next start on the same store resumes or redoes it.
  return process.exit(0);
}
