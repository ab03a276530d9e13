// Node's request listener: cached blob ranges and warm lazy data and chunk reads are offered to the
// app's shortcut first, which writes them without building a web Response; everything else, and
// whatever it declines, goes to the app through @hono/node-server. The same listener serves HTTP/1.1 (node:http) and HTTP/2 (node:http2's
// compatibility API, for `--tls-cert`), whose request names its host in `:authority`.
import { getRequestListener } from "@hono/node-server";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Http2ServerRequest, Http2ServerResponse } from "node:http2";
import type { TLSSocket } from "node:tls";
import type { SkiffApp } from "../http/app.ts";
import { errorAnswer } from "../http/errors.ts";
import type { ShortcutRequest } from "../http/range-shortcut.ts";
import { OciError } from "../oci/errors.ts";

type NodeRequest = IncomingMessage | Http2ServerRequest;
type NodeResponse = ServerResponse | Http2ServerResponse;

export function nodeListener(skiff: SkiffApp): (req: NodeRequest, res: NodeResponse) => Promise<void> {
  const toApp = getRequestListener(skiff.app.fetch);
  return async (req, res) => {
    if (req.rawHeaders.length > 2 * MAX_HEADER_FIELDS) {
      res.writeHead(TOO_MANY_FIELDS.status, TOO_MANY_FIELDS.headers);
      return void (res as ServerResponse).end(TOO_MANY_FIELDS.body);
    }
    const request = hostOf(req) ? shortcutRequest(req) : undefined;
    const shortcut = request && (await skiff.shortcut(request).catch(() => undefined));
    if (!shortcut) return toApp(req, res);
    // The shortcut's headers are all end to end (no Connection and the like), valid on HTTP/2 too.
    res.writeHead(shortcut.status, shortcut.headers);
    (res as ServerResponse).end(shortcut.body, shortcut.written);
  };
}

const hostOf = (req: NodeRequest): string | undefined => req.headers.host ?? (req.headers[":authority"] as string | undefined);

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
function shortcutRequest(req: NodeRequest): ShortcutRequest | undefined {
  const fields = req.headers;
  if (fields.authorization !== undefined && req.rawHeaders.filter((name, i) => i % 2 === 0 && name.toLowerCase() === "authorization").length > 1) return undefined;
  return {
    method: req.method ?? "",
    target: req.url ?? "",
    get url() {
      return `${(req.socket as TLSSocket).encrypted ? "https" : "http"}://${hostOf(req)}${req.url}`;
    },
    headers: {
      get(name: string): string | null {
        const value = fields[name];
        return value === undefined ? null : Array.isArray(value) ? value.join(", ") : value;
      },
    },
  };
}
