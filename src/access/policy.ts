// Who may pull what (docs/configuration.md#access-control). Every registry and lazy route asks
// `authorize` before it looks at any cache, so a private repository's content is only ever served to
// a client allowed to pull that repository, however it names the content.
import type { AccessConfig, Principal, UpstreamRoute } from "../config/config.ts";
import type { HasherFactory } from "../hash/hasher.ts";
import { OciError } from "../oci/errors.ts";
import type { Metrics } from "../util/metrics.ts";
import type { Credentials, Upstream } from "../oci/upstream.ts";
import { parseAuthorization, secretsEqual, type ClientCredentials } from "./authorization.ts";
import { PassthroughChecker } from "./passthrough.ts";
import { TokenSigner } from "./tokens.ts";

export interface Grant {
  /** Whether shared caches (CDNs) may keep the answer: only when anyone could have it. */
  shareable: boolean;
}

export interface AccessDeps {
  hasher: HasherFactory;
  metrics: Metrics;
  clientFor: (route: UpstreamRoute, credentials: Credentials | undefined) => Upstream;
  now?: () => number;
}

/** What the access decision reads of a request: its URL (for the challenge's realm) and its headers. */
export interface RequestHead {
  url: string;
  headers: { get(name: string): string | null };
}

export const TOKEN_PATH = "/_skiff/token";
const SERVICE = "skiff";

export class AccessPolicy {
  readonly config: AccessConfig;
  readonly signer: TokenSigner;
  readonly #metrics: Metrics;
  readonly #countAllowed: () => void;
  readonly #passthrough: PassthroughChecker;

  constructor(config: AccessConfig, deps: AccessDeps) {
    const now = deps.now ?? Date.now;
    this.config = config;
    this.signer = new TokenSigner(config.tokenSecret, now);
    this.#metrics = deps.metrics;
    this.#countAllowed = deps.metrics.counter("skiff_access_total", { mode: config.mode, result: "allowed" });
    this.#passthrough = new PassthroughChecker({ hasher: deps.hasher, clientFor: deps.clientFor, ttlMs: config.decisionTtlSeconds * 1000, now });
  }

  /** May this request pull from the route's repository? Throws the OCI error to answer otherwise. */
  async authorize(request: RequestHead, route: UpstreamRoute): Promise<Grant> {
    try {
      const grant = await this.decide(request, route);
      this.record();
      return grant;
    } catch (err) {
      this.record(err);
      throw err;
    }
  }

  /**
   * `authorize` in two halves, for a caller that may still hand the request on to `authorize`:
   * `decide` counts nothing, and `record` counts the decision once it is answered: no argument for
   * a grant, else what `decide` threw.
   */
  async decide(request: RequestHead, route: UpstreamRoute): Promise<Grant> {
    const { mode } = this.config;
    if (mode === "open") return { shareable: true };
    const header = request.headers.get("authorization");
    if (mode === "credentials") {
      const principal = await this.identify(header);
      if (!principal || principal === "invalid") throw this.#challenge(request, route, principal === "invalid");
      if (!principal.mayPull(route.repository)) throw new OciError("DENIED", `${principal.label} may not pull ${route.repository}`);
      return { shareable: false };
    }
    // passthrough
    if (route.upstream.public) return { shareable: true };
    const parsed = parseAuthorization(header);
    // Clients without credentials answer a Basic challenge with an empty user and password: anonymous.
    const anonymous = parsed === null || (parsed !== "invalid" && parsed.kind === "basic" && parsed.username === "" && parsed.password === "");
    const credentials = !anonymous && parsed !== "invalid" && parsed.kind === "basic" ? { username: parsed.username, password: parsed.password } : undefined;
    if (!anonymous && !credentials) throw passthroughChallenge("send Basic credentials of the upstream registry");
    if (await this.#passthrough.allowed(route, anonymous ? "" : header!, credentials)) return { shareable: false };
    if (!credentials) throw passthroughChallenge(`pulling ${route.repository} needs credentials of its registry`);
    throw new OciError("DENIED", `the upstream registry does not let these credentials pull ${route.repository}`);
  }

  record(refusal?: unknown): void {
    if (refusal === undefined) this.#countAllowed();
    else if (refusal instanceof OciError) this.#count(refusal.code === "UNAUTHORIZED" ? "unauthorized" : refusal.code === "DENIED" ? "denied" : "unavailable");
  }

  /**
   * `GET /v2/` is where clients learn how to log in; the answer's extra headers. In `credentials`
   * mode a client without valid credentials gets the 401 challenge. In `passthrough` mode anyone
   * gets 200, with a Basic challenge beside it (RFC 9110 allows one on any answer) because
   * credentials may unlock more: skopeo and docker decide from this answer alone whether to send them.
   */
  async authorizeBase(request: RequestHead): Promise<Record<string, string>> {
    if (this.config.mode === "passthrough") return { "WWW-Authenticate": `Basic realm="${SERVICE}"` };
    if (this.config.mode !== "credentials") return {};
    const principal = await this.identify(request.headers.get("authorization"));
    if (!principal || principal === "invalid") throw this.#challenge(request, undefined, principal === "invalid");
    return {};
  }

  /** The configured user or token behind an Authorization header: null when there is none. */
  async identify(header: string | null): Promise<Principal | null | "invalid"> {
    const parsed = parseAuthorization(header);
    if (parsed === null) return null;
    return (parsed !== "invalid" && (await this.#principal(parsed))) || "invalid";
  }

  /** The user with these Basic credentials, for the token endpoint. */
  user(username: string, password: string): Principal | null {
    const user = this.config.users.get(username);
    return user && secretsEqual(user.secret, password) ? user : null;
  }

  async #principal(credentials: ClientCredentials): Promise<Principal | null> {
    if (credentials.kind === "basic") return this.user(credentials.username, credentials.password);
    // Static tokens are compared each in full so the time taken says nothing about which one nearly matched.
    let found: Principal | null = null;
    for (const t of this.config.tokens) if (secretsEqual(t.secret, credentials.token)) found = t;
    if (found) return found;
    const claims = await this.signer.verify(credentials.token);
    return claims ? (this.config.users.get(claims.sub) ?? null) : null;
  }

  /** A 401 that sends the client to the token endpoint (clients drop an expired token on `invalid_token`). */
  #challenge(request: RequestHead, route: UpstreamRoute | undefined, invalid: boolean): OciError {
    const realm = this.config.realm ?? `${new URL(request.url).origin}${TOKEN_PATH}`;
    const scope = route ? `,scope="repository:${route.repository}:pull"` : "";
    const error = invalid ? `,error="invalid_token"` : "";
    const message = invalid ? "invalid or expired credentials" : "authentication required";
    return new OciError("UNAUTHORIZED", message, { headers: { "WWW-Authenticate": `Bearer realm="${realm}",service="${SERVICE}"${scope}${error}` } });
  }

  #count(result: string): void {
    this.#metrics.inc("skiff_access_total", { mode: this.config.mode, result });
  }
}

function passthroughChallenge(message: string): OciError {
  return new OciError("UNAUTHORIZED", message, { headers: { "WWW-Authenticate": `Basic realm="${SERVICE}"` } });
}
