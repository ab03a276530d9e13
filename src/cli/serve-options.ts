// How `skiff serve` is configured, shared by every runtime that runs it (Node's `skiff serve`, Deno's
// `deno task serve`): the flags, the config file or single-upstream flags, the environment.
import { readFileSync } from "node:fs";
import { ConfigError, resolveConfig, type SkiffConfig } from "../config/config.ts";
import { singleUpstreamConfig } from "../config/single.ts";
import type { ServeSettings } from "../http/app.ts";
import { integerFlag, parseFlags, sizeFlag, UsageError } from "./args.ts";

export const serveHelp = `Usage: skiff serve [--config FILE | --upstream URL ...] [options]

Runs the pull-through registry mirror, caching verified content under --data.

Upstreams and access (docs/configuration.md):
  --config FILE             JSON config: several upstreams by prefix, credentials, access mode
                            (or $SKIFF_CONFIG)
  --check                   validate the config, print what it resolves to (no secrets), exit
Or a single upstream, without a config file:
  --upstream URL            upstream registry origin (default https://registry-1.docker.io,
                            or $SKIFF_UPSTREAM)
  --upstream-user USER      upstream username (or $SKIFF_UPSTREAM_USER)
  --upstream-password PASS  upstream password (or $SKIFF_UPSTREAM_PASSWORD, preferred: not in ps)
  --upstream-ca FILE        PEM bundle of CA certificates to trust for the upstream
  --upstream-public         serve what the credentials reach to anyone (default: only without
                            credentials)
  --access MODE             open (default) or passthrough: clients' own credentials are checked
                            against the upstream before private content is served
  --allow-host HOST[:PORT]  extra host the upstream may redirect to or name as token realm;
                            repeatable; *.example.com matches subdomains on the default port
  --registry-alias NAME     registry name accepted in containerd's ?ns= besides the upstream host;
                            repeatable

Options:
  --host HOST               address to listen on (default 0.0.0.0)
  --port N                  port to listen on; 0 picks a free one (default 8080)
  --data DIR                filesystem store directory (default ./data)
  --tag-ttl SECONDS         how long a tag answer is served before asking upstream again, for
                            upstreams that set no tagTtl (default 60)
  --max-layer-size SIZE     largest layer the lazy API converts, e.g. 8g, 500m (default 8g)
  --max-expanded-size SIZE  largest a layer may expand to when converted; a decompression bomb
                            is refused once past it (default 64g)
  --max-layer-entries N     most files a layer may hold to be converted; its tree is kept in
                            memory, about 1.2 KiB a file (default 1000000)
  --convert-wait SECONDS    how long a bootstrap request waits for a conversion before the
                            answer 202 + Retry-After (default 30)
  --convert-step SIZE       convert at most SIZE of layer content per bootstrap request; the
                            conversion goes on at the next request (default: no limit)
  --platform OS/ARCH        platform of bootstraps whose request names none (default linux/amd64)
  -h, --help                show this help

When ready it prints one line: skiff listening on http://HOST:PORT`;

const SINGLE_UPSTREAM_FLAGS = ["upstream", "upstream-user", "upstream-password", "upstream-ca", "upstream-public", "access", "allow-host", "registry-alias"] as const;

export interface ServeOptions {
  config: SkiffConfig;
  /** Only validate and describe the config. */
  check: boolean;
  host: string;
  port: number;
  dataDir: string;
  app: ServeSettings;
}

/** The options the arguments and environment describe, or null when they ask for help. */
export function parseServeOptions(argv: string[], env: Record<string, string | undefined>): ServeOptions | null {
  const { values } = parseFlags(argv, {
    config: { type: "string" },
    check: { type: "boolean" },
    upstream: { type: "string" },
    "upstream-user": { type: "string" },
    "upstream-password": { type: "string" },
    "upstream-ca": { type: "string" },
    "upstream-public": { type: "boolean" },
    access: { type: "string" },
    "allow-host": { type: "string", multiple: true },
    "registry-alias": { type: "string", multiple: true },
    host: { type: "string" },
    port: { type: "string" },
    data: { type: "string" },
    "tag-ttl": { type: "string" },
    "max-layer-size": { type: "string" },
    "max-expanded-size": { type: "string" },
    "max-layer-entries": { type: "string" },
    "convert-wait": { type: "string" },
    "convert-step": { type: "string" },
    platform: { type: "string" },
  });
  if (values.help) return null;
  const tagTtl = integerFlag(values["tag-ttl"], "tag-ttl", 60);
  const configFile = values.config ?? env.SKIFF_CONFIG;
  let raw: unknown;
  if (configFile !== undefined) {
    const mixed = SINGLE_UPSTREAM_FLAGS.find((f) => values[f] !== undefined);
    if (mixed) throw new UsageError(`--${mixed} can't be combined with --config: describe the upstream in the config file`);
    raw = readConfigFile(configFile);
  } else {
    raw = singleUpstreamFromFlags(values, env);
  }
  let config: SkiffConfig;
  try {
    config = resolveConfig(raw, { env, readFile: (path) => readFileSync(path, "utf8"), defaultTagTtlSeconds: tagTtl });
  } catch (err) {
    if (err instanceof ConfigError) throw new UsageError(`config: ${err.message}`);
    throw err;
  }
  return {
    config,
    check: values.check ?? false,
    host: values.host ?? "0.0.0.0",
    port: integerFlag(values.port, "port", 8080, 0, 65535),
    dataDir: values.data ?? "./data",
    app: {
      maxLayerBytes: sizeFlag(values["max-layer-size"], "max-layer-size", 8 * 2 ** 30),
      maxExpandedBytes: positiveSize(values["max-expanded-size"] ?? "64g", "max-expanded-size"),
      maxLayerEntries: integerFlag(values["max-layer-entries"], "max-layer-entries", 1_000_000, 1),
      convertWaitSeconds: integerFlag(values["convert-wait"], "convert-wait", 30, 0, 3600),
      convertStepBytes: values["convert-step"] === undefined ? undefined : positiveSize(values["convert-step"], "convert-step"),
      defaultPlatform: values.platform,
    },
  };
}

function positiveSize(value: string, name: string): number {
  const bytes = sizeFlag(value, name, 0);
  if (bytes === 0) throw new UsageError(`--${name} must be more than 0`);
  return bytes;
}

function readConfigFile(path: string): unknown {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    throw new UsageError(`config: can't read ${path}: ${(err as { code?: string }).code ?? (err as Error).message}`);
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new UsageError(`config: ${path} is not valid JSON: ${(err as Error).message}`);
  }
}

/** The config the single-upstream flags describe: one upstream, which is also the default. */
function singleUpstreamFromFlags(values: Record<string, unknown>, env: Record<string, string | undefined>): unknown {
  const url = (values.upstream as string | undefined) ?? env.SKIFF_UPSTREAM ?? "https://registry-1.docker.io";
  try {
    const u = new URL(url);
    if (u.protocol !== "http:" && u.protocol !== "https:") throw new Error();
  } catch {
    throw new UsageError(`--upstream must be an http(s) URL, got ${JSON.stringify(url)}`);
  }
  const username = (values["upstream-user"] as string | undefined) ?? env.SKIFF_UPSTREAM_USER;
  const password = (values["upstream-password"] as string | undefined) ?? env.SKIFF_UPSTREAM_PASSWORD;
  if ((username === undefined) !== (password === undefined)) throw new UsageError("--upstream-user and --upstream-password go together");
  const access = (values.access as string | undefined) ?? "open";
  if (access !== "open" && access !== "passthrough") throw new UsageError(`--access must be open or passthrough (credentials mode needs a config file), got ${JSON.stringify(access)}`);
  if (username !== undefined && access === "open" && !values["upstream-public"]) {
    throw new UsageError("with upstream credentials the upstream is private: add --upstream-public to serve what they reach to anyone, or --access passthrough");
  }
  return singleUpstreamConfig({
    url,
    credentials: username !== undefined ? { username, password: password! } : undefined,
    public: values["upstream-public"] ? true : undefined,
    ca: values["upstream-ca"] as string | undefined,
    allowHosts: values["allow-host"] as string[] | undefined,
    namespaces: values["registry-alias"] as string[] | undefined,
    access,
  });
}

/** The resolved setup in a few lines, for the log and `--check`; no secret is printed. */
export function describeConfig(config: SkiffConfig): string {
  const lines = config.upstreams.map((u) => {
    const who = u.credentials ? `as ${u.credentials.username}` : "anonymously";
    const isDefault = u.prefix === config.defaultUpstream ? ", default" : "";
    return `upstream ${u.prefix}: ${u.url} ${who}, ${u.public ? "public" : "private"}${isDefault}; ?ns= ${u.namespaces.join(" ")}`;
  });
  const { access } = config;
  const who = access.mode === "credentials" ? ` (${access.users.size} users, ${access.tokens.length} tokens)` : "";
  lines.push(`access mode ${access.mode}${who}`);
  return lines.join("\n");
}
