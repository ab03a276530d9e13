// Node's request listener: cached blob ranges are offered to the app's shortcut first, which writes
// them without building a web Response; everything else, and whatever it declines, goes to the app
// through @hono/node-server.
import { getRequestListener } from "@hono/node-server";
import type { IncomingMessage, RequestListener } from "node:http";
import type { SkiffApp } from "../http/app.ts";
import { errorAnswer } from "../http/errors.ts";
import type { ShortcutRequest } from "../http/range-shortcut.ts";
import { OciError } from "../oci/errors.ts";

export function nodeListener(skiff: SkiffApp): RequestListener {
  const toApp = getRequestListener(skiff.app.fetch);
  return async (req, res) => {
    if (req.rawHeaders.length > 2 * MAX_HEADER_FIELDS) {
      res.writeHead(TOO_MANY_FIELDS.status, TOO_MANY_FIELDS.headers);
      return void res.end(TOO_MANY_FIELDS.body);
    }
    const request = req.headers.host ? shortcutRequest(req) : undefined;
    const shortcut = request && (await skiff.shortcut(request).catch(() => undefined));
    if (!shortcut) return toApp(req, res);
    res.writeHead(shortcut.status, shortcut.headers);
    res.end(shortcut.body, shortcut.written);
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
