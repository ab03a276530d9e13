// Node entry: the shared app on @hono/node-server, a filesystem store, node:crypto hashing and an
// undici connection pool for the upstream.
import { getRequestListener } from "@hono/node-server";
import { createServer, type IncomingMessage } from "node:http";
import type { AddressInfo } from "node:net";
import { Agent, fetch as undiciFetch } from "undici";
import { nodeHasher } from "../hash/node.ts";
import type { AppSettings } from "../config/serve-settings.ts";
import { createApp, type SkiffApp } from "../http/app.ts";
import { errorAnswer } from "../http/errors.ts";
import { OciError } from "../oci/errors.ts";
import type { ShortcutRequest } from "../http/range-shortcut.ts";
import type { SkiffConfig, UpstreamConfig } from "../config/config.ts";
import { FsStore } from "../store/fs.ts";
import { UPSTREAM_TIMEOUTS } from "../util/fetch-timeouts.ts";
import { nodeGunzip } from "./node-gunzip.ts";

export interface NodeServerOptions {
  config: SkiffConfig;
  host: string;
  port: number;
  dataDir: string;
  settings?: Partial<AppSettings>;
  log?: (message: string) => void;
}

export interface RunningServer extends SkiffApp {
  url: string;
  close(): Promise<void>;
}

export async function startNodeServer(opts: NodeServerOptions): Promise<RunningServer> {
  const store = await new FsStore(opts.dataDir).init();
  // One connection pool per upstream, trusting its CA bundle when it has one. bodyTimeout is the
  // longest silence between two chunks, not a limit on a whole (large) blob.
  const dispatchers = new Map<string, Agent>();
  const fetchFor = (upstream: UpstreamConfig) => {
    let dispatcher = dispatchers.get(upstream.prefix);
    if (!dispatcher) {
      const connect = upstream.ca ? { ca: upstream.ca, timeout: 10_000 } : { timeout: 10_000 };
      dispatcher = new Agent({ connections: 64, headersTimeout: UPSTREAM_TIMEOUTS.headersMs, bodyTimeout: UPSTREAM_TIMEOUTS.idleMs, connect });
      dispatchers.set(upstream.prefix, dispatcher);
    }
    const pool = dispatcher;
    return ((input: URL, init: RequestInit) => undiciFetch(input, { ...(init as object), dispatcher: pool })) as unknown as typeof fetch;
  };

  const skiff = createApp({
    config: opts.config,
    store,
    hasher: nodeHasher,
    gunzip: nodeGunzip,
    fetchFor,
    ...opts.settings,
    log: opts.log,
  });

  // Cached blob ranges are offered to the shortcut first; everything else, and whatever it
  // declines, goes to the app through @hono/node-server.
  const toApp = getRequestListener(skiff.app.fetch);
  const server = createServer(async (req, res) => {
    if (req.rawHeaders.length > 2 * MAX_HEADER_FIELDS) {
      res.writeHead(TOO_MANY_FIELDS.status, TOO_MANY_FIELDS.headers);
      return void res.end(TOO_MANY_FIELDS.body);
    }
    const request = req.headers.host ? shortcutRequest(req) : undefined;
    const shortcut = request && (await skiff.shortcut(request).catch(() => undefined));
    if (!shortcut) return toApp(req, res);
    res.writeHead(shortcut.status, shortcut.headers);
    res.end(shortcut.body, shortcut.written);
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port, opts.host, () => resolve());
  });
  const address = server.address() as AddressInfo;
  const host = address.family === "IPv6" ? `[${address.address}]` : address.address;
  return {
    ...skiff,
    url: `http://${host}:${address.port}`,
    close: async () => {
      // Stop accepting, let requests in flight finish, and drop idle keep-alive connections now
      // rather than after their timeout.
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      await closed;
      await Promise.all([...dispatchers.values()].map((d) => d.close()));
    },
  };
}

/**
 * Past this many header fields a request is refused. Node fills `req.headers` with the first 1000
 * only and drops the rest without a word, so a request could mean one thing to the shortcut and
 * another to the app; no registry client sends more than a few dozen.
 */
const MAX_HEADER_FIELDS = 500;
const TOO_MANY_FIELDS = errorAnswer(new OciError("UNSUPPORTED", `more than ${MAX_HEADER_FIELDS} header fields`, { status: 431 }));

/**
 * The shortcut's view of a request. Node joins repeated fields with ", " as web Headers do, except
 * the few it keeps only the first of; of those the shortcut reads Authorization, so a request that
 * repeats it is left to the app.
 */
function shortcutRequest(req: IncomingMessage): ShortcutRequest | undefined {
  const fields = req.headers;
  if (fields.authorization !== undefined && req.rawHeaders.filter((name, i) => i % 2 === 0 && name.toLowerCase() === "authorization").length > 1) return undefined;
  return {
    method: req.method ?? "",
    target: req.url ?? "",
    get url() {
      return `http://${fields.host}${req.url}`;
    },
    headers: {
      get(name: string): string | null {
        const value = fields[name];
        return value === undefined ? null : Array.isArray(value) ? value.join(", ") : value;
      },
    },
  };
}
