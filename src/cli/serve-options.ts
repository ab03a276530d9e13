// How `skiff serve` is configured, shared by every runtime that runs it (Node's `skiff serve`, Deno's
// `deno task serve`): the flags, the config file or single-upstream flags, the environment.
import { readFileSync } from "node:fs";
import { ConfigError, resolveConfig, type SkiffConfig } from "../config/config.ts";
import { parseServeSettings, SERVE_DEFAULTS, SettingsError, type AppSettings } from "../config/serve-settings.ts";
import { DEFAULT_MAX_ENTRIES, DEFAULT_MAX_EXPANDED_BYTES } from "../convert/layer.ts";
import { singleUpstreamConfig } from "../config/single.ts";
import type { TlsFiles } from "../runtime/tls-pair.ts";
import { addressFlag, durationFlag, integerFlag, parseFlags, sizeFlag, UsageError } from "./args.ts";

export const DEFAULT_METRICS_ADDRESS = "127.0.0.1:9107";
/** Under Kubernetes' default grace period of 30 s, which ends in SIGKILL. */
export const DEFAULT_SHUTDOWN_TIMEOUT_SECONDS = 25;

export const serveHelp = `Usage: skiff serve [--config FILE | --upstream URL ...] [options]

Runs the pull-through registry mirror, caching verified content under --data.

Upstreams and access (docs/configuration.md):
  --config FILE             JSON config: several upstreams by prefix, credentials, access mode
                            (or $SKIFF_CONFIG)
  --check                   validate the config (and the --tls-cert pair), print what it
                            resolves to (no secrets), exit
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
  --max-store-size SIZE     keep the store within SIZE, e.g. 50g, evicting what has gone unused
                            longest; evicted content is fetched or converted again when asked
                            for (default: no bound, or the config file's store.maxSize)
  --max-age DURATION        also evict what has not been used for DURATION, e.g. 30d, 12h
                            (default: never, or the config file's store.maxAge)
  --tls-cert FILE           serve https with this PEM certificate chain (leaf first), HTTP/2 to
                            clients that offer it; read again on SIGHUP and when the files change
  --tls-key FILE            the PEM private key of --tls-cert (give both or neither)
  --metrics-address HOST:PORT
                            where /metrics is served, on a listener of its own beside /healthz
                            and /readyz; port 0 picks a free one; off for none
                            (default ${DEFAULT_METRICS_ADDRESS}). The public port answers /healthz and
                            /readyz, never /metrics
  --shutdown-timeout SECONDS
                            on SIGTERM or SIGINT, how long responses in flight may take to
                            finish before they are cut and skiff exits; a second signal exits
                            at once (default ${DEFAULT_SHUTDOWN_TIMEOUT_SECONDS})
  --tag-ttl SECONDS         how long a tag answer is served before asking upstream again, for
                            upstreams that set no tagTtl (default 60)
  --max-layer-size SIZE     largest layer the lazy API converts, e.g. 8g, 500m (default ${SERVE_DEFAULTS["max-layer-size"]})
  --max-expanded-size SIZE  largest a layer may expand to when converted; a decompression bomb
                            is refused once past it (default ${DEFAULT_MAX_EXPANDED_BYTES / 2 ** 30}g)
  --max-layer-entries N     most files a layer may hold to be converted; its tree is kept in
                            memory, about 260 bytes a file (default ${DEFAULT_MAX_ENTRIES})
  --convert-wait SECONDS    how long a bootstrap request waits for a conversion before the
                            answer 202 + Retry-After (default ${SERVE_DEFAULTS["convert-wait"]})
  --convert-step SIZE       convert at most SIZE of layer content per bootstrap request; the
                            conversion goes on at the next request (default: no limit)
  --platform OS/ARCH        platform of bootstraps whose request names none (default ${SERVE_DEFAULTS.platform})
  --learned-prefetch on|off take nodes' reports of what their containers read first and serve the
                            merged list (docs/api.md#learned-prefetch); default on, or the config
                            file's "learnedPrefetch"
  --no-learned-prefetch     the same as --learned-prefetch off
  --none-first on|off       when a node asks for a codec other than none and the image is not
                            converted with it yet, convert with none first (a fraction of the
                            CPU) and answer with that bootstrap until the asked one is made
                            (docs/api.md#bootstrap); default on
  -h, --help                show this help

When ready it prints: skiff listening on http://HOST:PORT (https:// with --tls-cert)
and, unless --metrics-address is off: skiff metrics on http://HOST:PORT`;

const SINGLE_UPSTREAM_FLAGS = ["upstream", "upstream-user", "upstream-password", "upstream-ca", "upstream-public", "access", "allow-host", "registry-alias"] as const;

export interface ServeOptions {
  config: SkiffConfig;
  /** Only validate and describe the config. */
  check: boolean;
  host: string;
  port: number;
  dataDir: string;
  /** The store's bound and max age: the flags, else the config file's `store`. */
  maxStoreBytes?: number;
  maxAgeMs?: number;
  /** The operator's listener for /metrics, or null for none. */
  metrics: { host: string; port: number } | null;
  shutdownTimeoutSeconds: number;
  settings: AppSettings;
  /** `--tls-cert` and `--tls-key`: serve https. */
  tls?: TlsFiles;
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
    "max-store-size": { type: "string" },
    "max-age": { type: "string" },
    "tls-cert": { type: "string" },
    "tls-key": { type: "string" },
    "metrics-address": { type: "string" },
    "shutdown-timeout": { type: "string" },
    "tag-ttl": { type: "string" },
    "max-layer-size": { type: "string" },
    "max-expanded-size": { type: "string" },
    "max-layer-entries": { type: "string" },
    "convert-wait": { type: "string" },
    "convert-step": { type: "string" },
    platform: { type: "string" },
    "learned-prefetch": { type: "string" },
    "no-learned-prefetch": { type: "boolean" },
    "none-first": { type: "string" },
  });
  if (values.help) return null;
  if (values["no-learned-prefetch"] && values["learned-prefetch"] !== undefined) throw new UsageError("give one of --learned-prefetch and --no-learned-prefetch");
  if ((values["tls-cert"] === undefined) !== (values["tls-key"] === undefined)) throw new UsageError("give both --tls-cert and --tls-key, or neither");
  try {
    const { tagTtlSeconds, ...settings } = parseServeSettings({ ...values, "learned-prefetch": values["no-learned-prefetch"] ? "off" : values["learned-prefetch"] });
    const configFile = values.config ?? env.SKIFF_CONFIG;
    let raw: unknown;
    if (configFile !== undefined) {
      const mixed = SINGLE_UPSTREAM_FLAGS.find((f) => values[f] !== undefined);
      if (mixed) throw new UsageError(`--${mixed} can't be combined with --config: describe the upstream in the config file`);
      raw = readConfigFile(configFile);
    } else {
      raw = singleUpstreamConfig({
        ...values,
        upstream: values.upstream ?? env.SKIFF_UPSTREAM ?? "https://registry-1.docker.io",
        "upstream-user": values["upstream-user"] ?? env.SKIFF_UPSTREAM_USER,
        "upstream-password": values["upstream-password"] ?? env.SKIFF_UPSTREAM_PASSWORD,
      });
    }
    const config = resolveConfig(raw, { env, readFile: (path) => readFileSync(path, "utf8"), defaultTagTtlSeconds: tagTtlSeconds });
    return {
      config,
      maxStoreBytes: values["max-store-size"] === undefined ? config.store?.maxBytes : sizeFlag(values["max-store-size"], "max-store-size", 0, 1),
      maxAgeMs: values["max-age"] === undefined ? config.store?.maxAgeMs : durationFlag(values["max-age"], "max-age"),
      check: values.check ?? false,
      host: values.host ?? "0.0.0.0",
      port: integerFlag(values.port, "port", 8080, 0, 65535),
      dataDir: values.data ?? "./data",
      metrics: addressFlag(values["metrics-address"] ?? DEFAULT_METRICS_ADDRESS, "metrics-address"),
      shutdownTimeoutSeconds: integerFlag(values["shutdown-timeout"], "shutdown-timeout", DEFAULT_SHUTDOWN_TIMEOUT_SECONDS, 0, 3600),
      settings,
      ...(values["tls-cert"] !== undefined && { tls: { cert: values["tls-cert"], key: values["tls-key"]! } }),
    };
  } catch (err) {
    if (err instanceof SettingsError) throw new UsageError(err.spelled((s) => `--${s}`));
    if (err instanceof ConfigError) throw new UsageError(`config: ${err.message}`);
    throw err;
  }
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
