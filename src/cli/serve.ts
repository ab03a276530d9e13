// `skiff serve`: the pull-through registry proxy, on Node (src/runtime/node.ts) or on the runtime
// whose skiff command brings its own server (Deno: src/cli/deno.ts).
import type { RunningServer, ServerOptions } from "../runtime/fs-server.ts";
import { readTlsPair } from "../runtime/tls-pair.ts";
import { describeConfig, parseServeOptions, serveHelp } from "./serve-options.ts";

export { serveHelp };

export type StartServer = (opts: ServerOptions) => Promise<RunningServer>;

const SIGNALS = ["SIGINT", "SIGTERM"] as const;

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
  for (const line of describeConfig(opts.config).split("\n")) log(line);
  log(`store ${opts.dataDir}`);

  let stop!: () => void;
  const stopped = new Promise<void>((resolve) => (stop = resolve));
  for (const s of SIGNALS) process.on(s, stop);
  // With TLS, SIGHUP reads the certificate and key again (the server logs what came of it).
  const reload = server.reloadTls && (() => void server.reloadTls!("SIGHUP"));
  if (reload) process.on("SIGHUP", reload);
  await stopped;
  if (reload) process.off("SIGHUP", reload);
  // A second signal kills as usual; close() stops accepting and waits for requests in flight.
  for (const s of SIGNALS) process.off(s, stop);
  await server.close();
  return 0;
}
