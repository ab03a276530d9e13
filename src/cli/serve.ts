// `skiff serve`: the pull-through registry proxy on Node.
import { startNodeServer } from "../runtime/node.ts";
import { integerFlag, parseFlags, sizeFlag, UsageError } from "./args.ts";

export const serveHelp = `Usage: skiff serve [options]

Runs the pull-through registry mirror on Node, caching verified content under --data.

Options:
  --upstream URL            upstream registry origin (default https://registry-1.docker.io,
                            or $SKIFF_UPSTREAM)
  --host HOST               address to listen on (default 0.0.0.0)
  --port N                  port to listen on; 0 picks a free one (default 8080)
  --data DIR                filesystem store directory (default ./data)
  --tag-ttl SECONDS         how long a tag answer is served before asking upstream again (default 60)
  --upstream-user USER      upstream username (or $SKIFF_UPSTREAM_USER)
  --upstream-password PASS  upstream password (or $SKIFF_UPSTREAM_PASSWORD, preferred: not in ps)
  --allow-host HOST[:PORT]  extra host the upstream may redirect to or name as token realm;
                            repeatable; *.example.com matches subdomains on the default port
  --registry-alias NAME     registry name accepted in containerd's ?ns= besides the upstream host;
                            repeatable
  --max-layer-size SIZE     largest layer the lazy API converts, e.g. 8g, 500m (default 8g)
  --convert-wait SECONDS    how long a bootstrap request waits for a conversion before the
                            answer 202 + Retry-After (default 30)
  --platform OS/ARCH        platform of bootstraps whose request names none (default linux/amd64)
  -h, --help                show this help

When ready it prints one line: skiff listening on http://HOST:PORT`;

export async function serveCommand(argv: string[]): Promise<number> {
  const { values } = parseFlags(argv, {
    upstream: { type: "string" },
    host: { type: "string" },
    port: { type: "string" },
    data: { type: "string" },
    "tag-ttl": { type: "string" },
    "upstream-user": { type: "string" },
    "upstream-password": { type: "string" },
    "allow-host": { type: "string", multiple: true },
    "registry-alias": { type: "string", multiple: true },
    "max-layer-size": { type: "string" },
    "convert-wait": { type: "string" },
    platform: { type: "string" },
  });
  if (values.help) {
    console.log(serveHelp);
    return 0;
  }
  const env = process.env;
  const upstream = values.upstream ?? env.SKIFF_UPSTREAM ?? "https://registry-1.docker.io";
  try {
    const u = new URL(upstream);
    if (u.protocol !== "http:" && u.protocol !== "https:") throw new Error();
  } catch {
    throw new UsageError(`--upstream must be an http(s) URL, got ${JSON.stringify(upstream)}`);
  }
  const username = values["upstream-user"] ?? env.SKIFF_UPSTREAM_USER;
  const password = values["upstream-password"] ?? env.SKIFF_UPSTREAM_PASSWORD;
  if ((username === undefined) !== (password === undefined)) throw new UsageError("--upstream-user and --upstream-password go together");

  const log = (message: string) => process.stderr.write(`${new Date().toISOString()} ${message}\n`);
  const server = await startNodeServer({
    upstream: upstream.replace(/\/+$/, ""),
    credentials: username !== undefined ? { username, password: password! } : undefined,
    allowHosts: values["allow-host"],
    registryAliases: values["registry-alias"],
    host: values.host ?? "0.0.0.0",
    port: integerFlag(values.port, "port", 8080, 0, 65535),
    dataDir: values.data ?? "./data",
    tagTtlSeconds: integerFlag(values["tag-ttl"], "tag-ttl", 60),
    maxLayerBytes: sizeFlag(values["max-layer-size"], "max-layer-size", 8 * 2 ** 30),
    convertWaitSeconds: integerFlag(values["convert-wait"], "convert-wait", 30, 0, 3600),
    defaultPlatform: values.platform,
    log,
  });
  console.log(`skiff listening on ${server.url}`);
  log(`mirroring ${upstream}, store ${values.data ?? "./data"}`);

  await new Promise<void>((resolve) => {
    const stop = () => resolve();
    process.once("SIGINT", stop);
    process.once("SIGTERM", stop);
  });
  await server.close();
  return 0;
}
