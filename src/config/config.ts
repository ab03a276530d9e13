// The mirror's configuration: which upstream registries it serves under which prefix, with which
// credentials, and who may pull (docs/configuration.md). `resolveConfig` checks a parsed JSON
// document field by field, reads the secrets it points at, applies the environment overrides and
// returns plain values; every mistake is one ConfigError naming the field, never a secret's value.
import type { Credentials } from "../oci/upstream.ts";
import type { Route } from "../oci/upstreams.ts";
import { isRepositoryComponent } from "../oci/reference.ts";
import { PRESETS } from "./presets.ts";
import { parseDuration } from "../util/duration.ts";
import { parseSize } from "../util/size.ts";
import { compileRepositoryPattern } from "./patterns.ts";

export type AccessMode = "open" | "credentials" | "passthrough";
export const ACCESS_MODES: readonly AccessMode[] = ["open", "credentials", "passthrough"];

/** A client's repository routed to one of the configured upstreams. */
export type UpstreamRoute = Route<UpstreamConfig>;

export interface UpstreamConfig {
  /** The name component clients put before a repository name, and the first segment of its id. */
  prefix: string;
  url: string;
  credentials?: Credentials;
  /** Whether what skiff can reach there may be served to anyone the access mode lets in. */
  public: boolean;
  allowHosts: string[];
  /** PEM text of extra CA certificates (runtimes that can use them). */
  ca?: string;
  tagTtlSeconds: number;
  /** Lower-cased registry names accepted in `?ns=`: prefix, URL host, preset names, `namespaces`. */
  namespaces: string[];
  /** How the registry spells a client's repository name (Docker Hub's `library/`). */
  upstreamName: (name: string) => string;
}

export interface Principal {
  /** Shown in logs: a user name or a token's name, never a secret. */
  label: string;
  secret: string;
  /** Tests a repository id (`PREFIX/NAME`). */
  mayPull: (repository: string) => boolean;
}

export interface AccessConfig {
  mode: AccessMode;
  users: Map<string, Principal>;
  tokens: Principal[];
  /** Key for the tokens skiff issues; random per start when not configured. */
  tokenSecret?: string;
  tokenTtlSeconds: number;
  decisionTtlSeconds: number;
  realm?: string;
}

export interface SkiffConfig {
  upstreams: UpstreamConfig[];
  defaultUpstream?: string;
  access: AccessConfig;
  /** Whether nodes' read reports are taken and merged (docs/api.md, "Learned prefetch"); on when absent. A flag or Worker var overrides it. */
  learnedPrefetch?: boolean;
  /** The filesystem store's bound (`"store"`: Node and Deno); flags override it. */
  store?: StoreConfig;
}

export interface StoreConfig {
  maxBytes?: number;
  maxAgeMs?: number;
}

export interface ConfigEnvironment {
  env?: Record<string, string | undefined>;
  /** Reads a file named in the config (secrets, CA bundles); absent where there is no file system. */
  readFile?: (path: string) => string;
  /** Tag TTL of upstreams that set none (seconds). */
  defaultTagTtlSeconds?: number;
}

export class ConfigError extends Error {
  constructor(path: string, message: string) {
    super(path ? `${path}: ${message}` : message);
    this.name = "ConfigError";
  }
}

type Json = Record<string, unknown>;

const HOST_ENTRY = /^(\*\.)?[a-z0-9.-]+(:\d{1,5})?$|^\[[0-9a-f:.]+\](:\d{1,5})?$/i;
const MIN_TOKEN_SECRET_BYTES = 32;

/** The environment variable prefix for an upstream's credential overrides. */
export function upstreamEnvName(prefix: string): string {
  return `SKIFF_UPSTREAM_${prefix.toUpperCase().replace(/[^A-Z0-9]/g, "_")}`;
}

export function resolveConfig(raw: unknown, environment: ConfigEnvironment = {}): SkiffConfig {
  const env = environment.env ?? {};
  const root = object(raw, "");
  allowKeys(root, "", ["upstreams", "defaultUpstream", "access", "learnedPrefetch", "store"]);
  const upstreamsRaw = object(root.upstreams, "upstreams");
  const upstreams = Object.entries(upstreamsRaw).map(([prefix, entry]) => resolveUpstream(prefix, entry, environment));
  if (upstreams.length === 0) throw new ConfigError("upstreams", "name at least one upstream");

  const defaultUpstream = env.SKIFF_DEFAULT_UPSTREAM || optionalString(root, "defaultUpstream", "") || (upstreams.length === 1 ? upstreams[0]!.prefix : undefined);
  if (defaultUpstream !== undefined && !upstreams.some((u) => u.prefix === defaultUpstream)) {
    throw new ConfigError("defaultUpstream", `${JSON.stringify(defaultUpstream)} is not one of the upstreams (${upstreams.map((u) => u.prefix).join(", ")})`);
  }
  const claimed = new Map<string, string>();
  for (const u of upstreams) {
    for (const ns of u.namespaces) {
      const other = claimed.get(ns);
      if (other && other !== u.prefix) throw new ConfigError(`upstreams.${u.prefix}`, `registry name ${ns} is already served by upstream ${other}`);
      claimed.set(ns, u.prefix);
    }
  }

  const access = resolveAccess(root.access, environment);
  if (access.mode === "open") {
    const closed = upstreams.find((u) => !u.public);
    if (closed) {
      throw new ConfigError(
        `upstreams.${closed.prefix}`,
        `not public${closed.credentials ? " (it has credentials)" : ""}, and access mode "open" would serve it to anyone: set "public": true, or access.mode "passthrough" or "credentials"`,
      );
    }
  }
  return { upstreams, defaultUpstream, access, learnedPrefetch: optionalBoolean(root, "learnedPrefetch", ""), store: resolveStore(root.store) };
}

/** `"store": { "maxSize": "50g", "maxAge": "30d" }`. */
function resolveStore(raw: unknown): StoreConfig | undefined {
  if (raw === undefined) return undefined;
  const o = object(raw, "store");
  allowKeys(o, "store", ["maxSize", "maxAge"]);
  const maxSize = optionalString(o, "maxSize", "store");
  const maxAge = optionalString(o, "maxAge", "store");
  const maxBytes = maxSize === undefined ? undefined : parseSize(maxSize);
  const maxAgeMs = maxAge === undefined ? undefined : parseDuration(maxAge);
  if (maxBytes === null || maxBytes === 0) throw new ConfigError("store.maxSize", `must be a size above 0 like 500m or 50g, got ${JSON.stringify(maxSize)}`);
  if (maxAgeMs === null || maxAgeMs === 0) throw new ConfigError("store.maxAge", `must be a duration above 0 like 12h or 30d, got ${JSON.stringify(maxAge)}`);
  return { maxBytes, maxAgeMs };
}

function resolveUpstream(prefix: string, raw: unknown, environment: ConfigEnvironment): UpstreamConfig {
  const path = `upstreams.${prefix}`;
  if (!isRepositoryComponent(prefix) || prefix.length > 128) {
    throw new ConfigError(path, "a prefix is one repository-name component: lowercase letters and digits, separated by . _ __ or -");
  }
  const o = object(raw, path);
  allowKeys(o, path, ["preset", "url", "credentials", "public", "allowHosts", "ca", "tagTtl", "namespaces"]);
  const presetName = optionalString(o, "preset", path) ?? (prefix in PRESETS ? prefix : undefined);
  const preset = presetName === undefined ? undefined : PRESETS[presetName];
  if (presetName !== undefined && !preset) throw new ConfigError(`${path}.preset`, `unknown preset ${JSON.stringify(presetName)} (known: ${Object.keys(PRESETS).join(", ")})`);

  const url = optionalString(o, "url", path) ?? preset?.url;
  if (url === undefined) throw new ConfigError(path, `give a url (or a preset: ${Object.keys(PRESETS).join(", ")})`);
  let origin: URL;
  try {
    origin = new URL(url);
  } catch {
    throw new ConfigError(`${path}.url`, `not a URL: ${JSON.stringify(url)}`);
  }
  if (origin.username || origin.password) throw new ConfigError(`${path}.url`, "must not hold credentials: put them in credentials");
  if ((origin.protocol !== "http:" && origin.protocol !== "https:") || origin.pathname !== "/" || origin.search || origin.hash) {
    throw new ConfigError(`${path}.url`, `must be a bare origin like https://host[:port], got ${JSON.stringify(url)}`);
  }

  const credentials = resolveCredentials(o.credentials, prefix, environment);
  const isPublic = optionalBoolean(o, "public", path) ?? !credentials;
  const allowHosts = stringList(o, "allowHosts", path);
  allowHosts.forEach((h, i) => {
    const port = /:(\d+)$/.exec(h)?.[1];
    if (!HOST_ENTRY.test(h) || (port !== undefined && Number(port) > 65535)) {
      throw new ConfigError(`${path}.allowHosts[${i}]`, `not a host, host:port or *.domain: ${JSON.stringify(h)}`);
    }
  });
  const caPath = optionalString(o, "ca", path);
  const ca = caPath === undefined ? undefined : readNamedFile(caPath, `${path}.ca`, environment);
  if (ca !== undefined && !ca.includes("-----BEGIN CERTIFICATE-----")) throw new ConfigError(`${path}.ca`, "the file holds no PEM certificate");
  const tagTtlSeconds = optionalInteger(o, "tagTtl", path, 0, 86_400 * 365) ?? environment.defaultTagTtlSeconds ?? 60;
  const namespaces = [...new Set([prefix, origin.host, ...(preset?.namespaces ?? []), ...stringList(o, "namespaces", path)].map((n) => n.toLowerCase()))];

  return {
    prefix,
    url: origin.origin,
    credentials,
    public: isPublic,
    allowHosts: [...(preset?.allowHosts ?? []), ...allowHosts],
    ca,
    tagTtlSeconds,
    namespaces,
    upstreamName: preset?.upstreamName ?? ((name) => name),
  };
}

function resolveCredentials(raw: unknown, prefix: string, environment: ConfigEnvironment): Credentials | undefined {
  const path = `upstreams.${prefix}.credentials`;
  const env = environment.env ?? {};
  const envName = upstreamEnvName(prefix);
  const envUser = env[`${envName}_USERNAME`] || undefined;
  const envPassword = env[`${envName}_PASSWORD`] || undefined;
  let username: string | undefined;
  let password: string | undefined;
  if (raw !== undefined) {
    const o = object(raw, path);
    allowKeys(o, path, ["username", "password", "passwordEnv", "passwordFile"]);
    username = requiredString(o, "username", path);
    // The environment wins, but the file must still be well formed.
    password = envPassword === undefined ? secret(o, "password", path, environment) : (secretKey(o, "password", path), envPassword);
  }
  username = envUser ?? username;
  password = envPassword ?? password;
  if (username === undefined && password === undefined) return undefined;
  if (username === undefined || password === undefined) {
    throw new ConfigError(path, `a username needs a password and a password a username (${envName}_USERNAME / ${envName}_PASSWORD)`);
  }
  return { username, password };
}

function resolveAccess(raw: unknown, environment: ConfigEnvironment): AccessConfig {
  const path = "access";
  const env = environment.env ?? {};
  const o = raw === undefined ? {} : object(raw, path);
  allowKeys(o, path, ["mode", "users", "tokens", "tokenSecret", "tokenSecretEnv", "tokenSecretFile", "tokenTtl", "decisionTtl", "realm"]);
  const mode = env.SKIFF_ACCESS_MODE || optionalString(o, "mode", path) || "open";
  if (!ACCESS_MODES.includes(mode as AccessMode)) throw new ConfigError(`${path}.mode`, `must be one of ${ACCESS_MODES.join(", ")}, got ${JSON.stringify(mode)}`);

  const users = new Map<string, Principal>();
  list(o, "users", path).forEach((entry, i) => {
    const p = `${path}.users[${i}]`;
    const u = object(entry, p);
    allowKeys(u, p, ["username", "password", "passwordEnv", "passwordFile", "repositories"]);
    const username = requiredString(u, "username", p);
    if (username.includes(":") || username === "") throw new ConfigError(`${p}.username`, "must be non-empty and contain no ':'");
    if (users.has(username)) throw new ConfigError(`${p}.username`, `user ${JSON.stringify(username)} is listed twice`);
    users.set(username, { label: `user ${username}`, secret: secret(u, "password", p, environment), mayPull: repositories(u, p) });
  });
  const tokens = list(o, "tokens", path).map((entry, i): Principal => {
    const p = `${path}.tokens[${i}]`;
    const t = object(entry, p);
    allowKeys(t, p, ["name", "token", "tokenEnv", "tokenFile", "repositories"]);
    const token = secret(t, "token", p, environment);
    if (token.length < 16) throw new ConfigError(`${p}.token`, "must be at least 16 characters");
    return { label: `token ${optionalString(t, "name", p) ?? i}`, secret: token, mayPull: repositories(t, p) };
  });
  if (mode === "credentials" && users.size === 0 && tokens.length === 0) {
    throw new ConfigError(path, `mode "credentials" needs at least one entry in users or tokens, or nobody could pull`);
  }

  const hasSecret = o.tokenSecret !== undefined || o.tokenSecretEnv !== undefined || o.tokenSecretFile !== undefined;
  if (hasSecret) secretKey(o, "tokenSecret", path);
  const tokenSecret = env.SKIFF_TOKEN_SECRET || (hasSecret ? secret(o, "tokenSecret", path, environment) : undefined);
  if (tokenSecret !== undefined && new TextEncoder().encode(tokenSecret).byteLength < MIN_TOKEN_SECRET_BYTES) {
    throw new ConfigError(`${path}.tokenSecret`, `must be at least ${MIN_TOKEN_SECRET_BYTES} bytes`);
  }
  const realm = optionalString(o, "realm", path);
  if (realm !== undefined && !/^https?:\/\/[^\s"]+$/.test(realm)) throw new ConfigError(`${path}.realm`, `must be an absolute http(s) URL, got ${JSON.stringify(realm)}`);
  return {
    mode: mode as AccessMode,
    users,
    tokens,
    tokenSecret,
    tokenTtlSeconds: optionalInteger(o, "tokenTtl", path, 10, 86_400) ?? 300,
    decisionTtlSeconds: optionalInteger(o, "decisionTtl", path, 0, 3600) ?? 60,
    realm,
  };
}

function repositories(o: Json, path: string): (repository: string) => boolean {
  if (o.repositories === undefined) return () => true;
  const patterns = stringList(o, "repositories", path).map((pattern, i) => {
    try {
      return compileRepositoryPattern(pattern);
    } catch (err) {
      throw new ConfigError(`${path}.repositories[${i}]`, (err as Error).message);
    }
  });
  return (repository) => patterns.some((p) => p.test(repository));
}

/** Which one of `base`, `baseEnv` (a variable's name) and `baseFile` (a path) is given: exactly one. */
function secretKey(o: Json, base: string, path: string): string {
  const given = [base, `${base}Env`, `${base}File`].filter((k) => o[k] !== undefined);
  if (given.length !== 1) throw new ConfigError(path, `give exactly one of ${base}, ${base}Env, ${base}File`);
  const key = given[0]!;
  if (typeof o[key] !== "string" || o[key] === "") throw new ConfigError(`${path}.${key}`, "must be a non-empty string");
  return key;
}

// A secret pasted where a variable name or a path belongs must not end up in an error message, so
// these messages name a variable only when it looks like one, and never a secret file's path.
function secret(o: Json, base: string, path: string, environment: ConfigEnvironment): string {
  const key = secretKey(o, base, path);
  const value = o[key] as string;
  if (key === base) return value;
  if (key.endsWith("Env")) {
    const fromEnv = environment.env?.[value];
    const name = /^[A-Za-z_][A-Za-z0-9_]{0,100}$/.test(value) ? `environment variable ${value}` : "the environment variable it names";
    if (!fromEnv) throw new ConfigError(`${path}.${key}`, `${name} is not set`);
    return fromEnv;
  }
  const text = readNamedFile(value, `${path}.${key}`, environment, false).replace(/\r?\n$/, "");
  if (text === "") throw new ConfigError(`${path}.${key}`, "the file is empty");
  return text;
}

function readNamedFile(file: string, path: string, environment: ConfigEnvironment, showPath = true): string {
  if (!environment.readFile) throw new ConfigError(path, "files can't be read on this runtime: use the environment form");
  try {
    return environment.readFile(file);
  } catch (err) {
    const what = showPath ? file : "the file it names";
    throw new ConfigError(path, `can't read ${what}: ${(err as { code?: string }).code ?? "read failed"}`);
  }
}

function object(value: unknown, path: string): Json {
  if (typeof value !== "object" || value === null || Array.isArray(value)) throw new ConfigError(path, "must be an object");
  return value as Json;
}

function allowKeys(o: Json, path: string, allowed: string[]): void {
  for (const key of Object.keys(o)) {
    if (!allowed.includes(key)) throw new ConfigError(path ? `${path}.${key}` : key, `unknown field (known: ${allowed.join(", ")})`);
  }
}

function optionalString(o: Json, key: string, path: string): string | undefined {
  const value = o[key];
  if (value === undefined) return undefined;
  if (typeof value !== "string" || value === "") throw new ConfigError(path ? `${path}.${key}` : key, "must be a non-empty string");
  return value;
}

function requiredString(o: Json, key: string, path: string): string {
  const value = optionalString(o, key, path);
  if (value === undefined) throw new ConfigError(`${path}.${key}`, "is required");
  return value;
}

function optionalBoolean(o: Json, key: string, path: string): boolean | undefined {
  const value = o[key];
  if (value !== undefined && typeof value !== "boolean") throw new ConfigError(path ? `${path}.${key}` : key, "must be true or false");
  return value as boolean | undefined;
}

function optionalInteger(o: Json, key: string, path: string, min: number, max: number): number | undefined {
  const value = o[key];
  if (value === undefined) return undefined;
  if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > max) {
    throw new ConfigError(`${path}.${key}`, `must be a whole number of seconds from ${min} to ${max}`);
  }
  return value;
}

function list(o: Json, key: string, path: string): unknown[] {
  const value = o[key];
  if (value === undefined) return [];
  if (!Array.isArray(value)) throw new ConfigError(`${path}.${key}`, "must be a list");
  return value;
}

function stringList(o: Json, key: string, path: string): string[] {
  return list(o, key, path).map((v, i) => {
    if (typeof v !== "string" || v === "") throw new ConfigError(`${path}.${key}[${i}]`, "must be a non-empty string");
    return v;
  });
}
