// Small helpers shared by the subcommands: flag parsing with one-line errors, and help output.
import { parseArgs, type ParseArgsConfig } from "node:util";
import { parseDuration } from "../util/duration.ts";
import { parseSize } from "../util/size.ts";

/** A mistake in how the command was called: printed as one line, exit status 2. */
export class UsageError extends Error {}

export function parseFlags<T extends NonNullable<ParseArgsConfig["options"]>>(argv: string[], options: T, allowPositionals = false) {
  try {
    return parseArgs({ args: argv, options: { ...options, help: { type: "boolean", short: "h" } }, allowPositionals, strict: true });
  } catch (err) {
    throw new UsageError((err as Error).message.split("\n")[0]);
  }
}

export function integerFlag(value: string | undefined, name: string, fallback: number, min = 0, max = Number.MAX_SAFE_INTEGER): number {
  if (value === undefined) return fallback;
  if (!/^\d+$/.test(value)) throw new UsageError(`--${name} must be a whole number, got ${JSON.stringify(value)}`);
  const n = Number(value);
  if (n < min || n > max) throw new UsageError(`--${name} must be between ${min} and ${max}, got ${n}`);
  return n;
}

/** A `HOST:PORT` flag (an IPv6 host in brackets), or null for `off`; port 0 picks a free one. */
export function addressFlag(value: string, name: string): { host: string; port: number } | null {
  if (value === "off") return null;
  const m = /^(\[[0-9A-Fa-f:.]+\]|[^\s:/[\]]+):(\d{1,5})$/.exec(value);
  if (!m || Number(m[2]) > 65535) throw new UsageError(`--${name} must be HOST:PORT or off, got ${JSON.stringify(value)}`);
  return { host: m[1]!.replace(/^\[|\]$/g, ""), port: Number(m[2]) };
}

/** A byte size such as `8g`, `500m`, `64k` or `1048576`, at least `min`. */
export function sizeFlag(value: string | undefined, name: string, fallback: number, min = 0): number {
  if (value === undefined) return fallback;
  const bytes = parseSize(value);
  if (bytes === null || bytes < min) throw new UsageError(`--${name} must be a size${min > 0 ? " above 0" : ""} like 500m or 8g, got ${JSON.stringify(value)}`);
  return bytes;
}

/** A duration above 0 such as `30d`, `12h`, `90m`, `45s` or plain seconds, in milliseconds. */
export function durationFlag(value: string, name: string): number {
  const ms = parseDuration(value);
  if (ms === null || ms === 0) throw new UsageError(`--${name} must be a duration above 0 like 12h or 30d, got ${JSON.stringify(value)}`);
  return ms;
}

/** A `--header 'Name: value'` flag: a valid field name (RFC 9110 token) and its value. */
export function headerFlag(text: string): [string, string] {
  const i = text.indexOf(":");
  const name = text.slice(0, i).trim();
  if (i < 1 || !/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(name)) throw new UsageError(`--header must be 'Name: value', got ${JSON.stringify(text)}`);
  return [name, text.slice(i + 1).trim()];
}
