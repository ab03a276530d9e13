// The client for one upstream registry: anonymous, Basic or the Bearer token flow (tokens cached per
// scope until they expire), and redirects to blob storage followed by hand so that only allowed
// hosts are ever contacted and credentials never leave the registry's own origin.
import { bearerChallenge, parseChallenges } from "./challenge.ts";
import { OciError } from "./errors.ts";
import { readAll } from "../util/streams.ts";
import { rateLimitHeaders } from "./upstream-errors.ts";

export interface Credentials {
  username: string;
  password: string;
}

export interface UpstreamOptions {
  /** Base URL of the registry, e.g. `https://registry-1.docker.io`. */
  url: string;
  credentials?: Credentials;
  /** Extra hosts (`host`, `host:port` or `*.domain`) allowed for redirects and token realms. */
  allowHosts?: string[];
  fetch?: typeof fetch;
  now?: () => number;
  /** Called once per HTTP exchange with the upstream or its token/storage hosts (metrics). */
  onExchange?: (status: number | "error") => void;
  userAgent?: string;
}

export interface UpstreamRequest {
  method?: "GET" | "HEAD";
  headers?: Record<string, string>;
  /** Query string appended to the path (without `?`). */
  query?: string;
}

/** The upstream could not be reached at all (connection refused, DNS, TLS, timeout). */
export class UpstreamUnreachable extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "UpstreamUnreachable";
  }
}

interface CachedToken {
  token: string;
  expiresAt: number;
}

const MAX_REDIRECTS = 5;
// Tokens are refreshed a little before they expire so a request never races the expiry.
const TOKEN_EXPIRY_MARGIN_MS = 10_000;
const DEFAULT_TOKEN_LIFETIME_S = 60;
const MAX_TOKEN_RESPONSE_BYTES = 1 << 20;

export class Upstream {
  readonly origin: URL;
  readonly #opts: UpstreamOptions;
  readonly #fetch: typeof fetch;
  readonly #now: () => number;
  readonly #allowed: string[];
  readonly #tokens = new Map<string, CachedToken>();
  readonly #pendingTokens = new Map<string, Promise<string>>();
  // What the registry asked for last time; lets later requests authenticate up front.
  #scheme: { kind: "basic" } | { kind: "bearer"; realm: string; service?: string } | null = null;

  constructor(opts: UpstreamOptions) {
    const origin = new URL(opts.url);
    if (origin.protocol !== "http:" && origin.protocol !== "https:") throw new Error(`upstream must be http(s): ${opts.url}`);
    if (origin.pathname !== "/" || origin.search || origin.username) throw new Error(`upstream must be a bare origin like https://host[:port]: ${opts.url}`);
    this.origin = origin;
    this.#opts = opts;
    this.#fetch = opts.fetch ?? ((input, init) => fetch(input, init));
    this.#now = opts.now ?? Date.now;
    this.#allowed = [origin.host.toLowerCase(), ...(opts.allowHosts ?? []).map((h) => h.toLowerCase())];
  }

  get host(): string {
    return this.origin.host;
  }

  /** True when `url` may be contacted: http(s), no downgrade from https, host on the allow list. */
  isAllowed(url: URL): boolean {
    if (url.protocol !== "http:" && url.protocol !== "https:") return false;
    if (this.origin.protocol === "https:" && url.protocol === "http:") return false;
    const host = url.host.toLowerCase();
    return this.#allowed.some((entry) => {
      if (entry.startsWith("*.")) return url.port === "" && url.hostname.toLowerCase().endsWith(entry.slice(1));
      return entry === host;
    });
  }

  /** Sends `METHOD /v2/<name>/<path>` upstream, authenticating and following allowed redirects. */
  async request(name: string, path: string, req: UpstreamRequest = {}): Promise<Response> {
    const url = new URL(`/v2/${name}/${path}${req.query ? `?${req.query}` : ""}`, this.origin);
    const scope = `repository:${name}:pull`;
    let res = await this.#send(url, req, await this.#authorization(scope, false), scope);
    if (res.status !== 401) return res;

    const header = res.headers.get("www-authenticate");
    const bearer = bearerChallenge(header);
    if (bearer) {
      await res.body?.cancel();
      this.#scheme = { kind: "bearer", realm: bearer.realm, service: bearer.service };
      const token = await this.#token(bearer.realm, bearer.service, bearer.scope ?? scope, true, true);
      return this.#send(url, req, `Bearer ${token}`, scope);
    }
    const basic = header ? parseChallenges(header).some((c) => c.scheme === "basic") : false;
    if (basic && this.#opts.credentials && this.#scheme?.kind !== "basic") {
      await res.body?.cancel();
      this.#scheme = { kind: "basic" };
      return this.#send(url, req, this.#basic(), scope);
    }
    return res;
  }

  #basic(): string {
    const { username, password } = this.#opts.credentials!;
    return `Basic ${btoa(String.fromCharCode(...new TextEncoder().encode(`${username}:${password}`)))}`;
  }

  async #authorization(scope: string, refresh: boolean): Promise<string | undefined> {
    const scheme = this.#scheme;
    if (scheme?.kind === "basic") return this.#opts.credentials ? this.#basic() : undefined;
    if (scheme?.kind === "bearer") return `Bearer ${await this.#token(scheme.realm, scheme.service, scope, refresh, true)}`;
    return undefined;
  }

  /**
   * A token for the scope, from the cache unless `refresh`; concurrent callers share one request.
   * The configured credentials go only to the registry's own token service (`withCredentials`).
   */
  async #token(realm: string, service: string | undefined, scope: string, refresh: boolean, withCredentials: boolean): Promise<string> {
    const key = `${realm}\n${service ?? ""}\n${scope}\n${withCredentials}`;
    const cached = this.#tokens.get(key);
    if (!refresh && cached && cached.expiresAt > this.#now()) return cached.token;
    let pending = this.#pendingTokens.get(key);
    if (!pending) {
      pending = this.#fetchToken(realm, service, scope, withCredentials)
        .then((t) => {
          this.#tokens.set(key, t);
          return t.token;
        })
        .finally(() => this.#pendingTokens.delete(key));
      this.#pendingTokens.set(key, pending);
    }
    return pending;
  }

  async #fetchToken(realm: string, service: string | undefined, scope: string, withCredentials: boolean): Promise<CachedToken> {
    let url: URL;
    try {
      url = new URL(realm);
    } catch {
      throw new OciError("UNAVAILABLE", `upstream ${this.host} named an invalid token realm`);
    }
    if (!this.isAllowed(url)) {
      throw new OciError("UNAVAILABLE", `upstream ${this.host} named token realm host ${url.host}, which is not allowed (add it to the upstream's allowHosts)`);
    }
    if (service) url.searchParams.set("service", service);
    for (const s of scope.split(" ").filter(Boolean)) url.searchParams.append("scope", s);
    const headers: Record<string, string> = { Accept: "application/json" };
    const credentials = withCredentials ? this.#opts.credentials : undefined;
    if (credentials) headers.Authorization = this.#basic();
    const res = await this.#exchange(url, { method: "GET", headers });
    if (res.status === 401 || res.status === 403) {
      await res.body?.cancel();
      throw new OciError("DENIED", `upstream token service refused ${credentials ? "the configured credentials" : "anonymous access"} for ${scope}`);
    }
    if (res.status === 429) {
      await res.body?.cancel();
      throw new OciError("TOOMANYREQUESTS", `upstream token service rate limit reached`, { headers: rateLimitHeaders(res.headers) });
    }
    if (!res.ok) {
      await res.body?.cancel();
      throw new OciError("UNAVAILABLE", `upstream token service answered HTTP ${res.status}`);
    }
    let body: { token?: unknown; access_token?: unknown; expires_in?: unknown; issued_at?: unknown };
    try {
      body = JSON.parse(new TextDecoder().decode(await readAll(res.body!, MAX_TOKEN_RESPONSE_BYTES))) as typeof body;
    } catch {
      throw new OciError("UNAVAILABLE", "upstream token service answered with invalid JSON");
    }
    const token = typeof body.token === "string" ? body.token : typeof body.access_token === "string" ? body.access_token : "";
    if (!token) throw new OciError("UNAVAILABLE", "upstream token service answered without a token");
    const lifetime = typeof body.expires_in === "number" && body.expires_in > 0 ? body.expires_in : DEFAULT_TOKEN_LIFETIME_S;
    const issued = typeof body.issued_at === "string" ? Date.parse(body.issued_at) : NaN;
    // Trust the issue time only when it is close to our clock; a skewed clock must not expire tokens early.
    const start = Number.isFinite(issued) && Math.abs(issued - this.#now()) < 60_000 ? issued : this.#now();
    return { token, expiresAt: start + lifetime * 1000 - Math.min(TOKEN_EXPIRY_MARGIN_MS, (lifetime * 1000) / 2) };
  }

  /**
   * One request with redirects followed by hand; Authorization is dropped on leaving the origin. A
   * host redirected to that asks for its own bearer token (registry.k8s.io sends clients on to
   * Artifact Registry) gets an anonymous one, used for that host only.
   */
  async #send(url: URL, req: UpstreamRequest, authorization: string | undefined, scope: string): Promise<Response> {
    const headers: Record<string, string> = {
      ...req.headers,
      "Accept-Encoding": "identity",
      "User-Agent": this.#opts.userAgent ?? "skiff",
    };
    if (authorization) headers.Authorization = authorization;
    let current = url;
    for (let hop = 0; ; hop++) {
      let res = await this.#exchange(current, { method: req.method ?? "GET", headers });
      const bearer = res.status === 401 && current.origin !== this.origin.origin ? bearerChallenge(res.headers.get("www-authenticate")) : null;
      if (bearer) {
        await res.body?.cancel();
        const token = await this.#token(bearer.realm, bearer.service, bearer.scope ?? scope, false, false);
        res = await this.#exchange(current, { method: req.method ?? "GET", headers: { ...headers, Authorization: `Bearer ${token}` } });
      }
      const location = res.headers.get("location");
      if (res.status < 300 || res.status >= 400 || res.status === 304 || !location) return res;
      await res.body?.cancel();
      if (hop >= MAX_REDIRECTS) throw new OciError("UNAVAILABLE", `upstream ${this.host} redirected more than ${MAX_REDIRECTS} times`);
      let next: URL;
      try {
        next = new URL(location, current);
      } catch {
        throw new OciError("UNAVAILABLE", `upstream ${this.host} redirected to an invalid location`);
      }
      if (!this.isAllowed(next)) {
        throw new OciError("UNAVAILABLE", `upstream ${this.host} redirected to ${next.host}, which is not allowed (add it to the upstream's allowHosts)`);
      }
      if (next.origin !== this.origin.origin) delete headers.Authorization;
      current = next;
    }
  }

  async #exchange(url: URL, init: { method: string; headers: Record<string, string> }): Promise<Response> {
    let res: Response;
    try {
      res = await this.#fetch(url, { method: init.method, headers: init.headers, redirect: "manual" });
    } catch (err) {
      this.#opts.onExchange?.("error");
      const cause = (err as { cause?: { code?: string; message?: string } }).cause;
      // The message says what went wrong ("unable to verify the first certificate"), the code what to search for.
      const reason = cause?.message && cause.code && !cause.message.includes(cause.code) ? `${cause.message} (${cause.code})` : (cause?.message ?? cause?.code ?? (err as Error).message);
      throw new UpstreamUnreachable(`upstream ${url.host} unreachable: ${reason}`, { cause: err });
    }
    this.#opts.onExchange?.(res.status);
    return res;
  }
}
