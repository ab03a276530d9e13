// `skiff serve`: the pull-through registry proxy on Node.
import { startNodeServer } from "../runtime/node.ts";
import { describeConfig, parseServeOptions, serveHelp } from "./serve-options.ts";

export { serveHelp };

export async function serveCommand(argv: string[]): Promise<number> {
  const opts = parseServeOptions(argv, process.env);
  if (!opts) {
    console.log(serveHelp);
    return 0;
  }
  if (opts.check) {
    console.log(describeConfig(opts.config));
    return 0;
  }
  const log = (message: string) => process.stderr.write(`${new Date().toISOString()} ${message}\n`);
  const server = await startNodeServer({ ...opts, log });
  console.log(`skiff listening on ${server.url}`);
  for (const line of describeConfig(opts.config).split("\n")) log(line);
  log(`store ${opts.dataDir}`);

  await new Promise<void>((resolve) => {
    const stop = () => resolve();
    process.once("SIGINT", stop);
    process.once("SIGTERM", stop);
  });
  await server.close();
  return 0;
}
