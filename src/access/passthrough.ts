// `passthrough` mode: may this client pull this repository? The upstream decides, asked with the
// client's own credentials (or none) the way a client would ask: `GET /v2/NAME/tags/list?n=1`,
// following the upstream's token flow. Answers are kept for a short while per (credentials,
// repository); only a digest of the credentials is kept, and concurrent askers share one check.
import type { UpstreamRoute } from "../config/config.ts";
import { hashBytes, type HasherFactory } from "../hash/hasher.ts";
import { OciError } from "../oci/errors.ts";
import type { Credentials, Upstream } from "../oci/upstream.ts";

export interface PassthroughDeps {
  hasher: HasherFactory;
  /** A client for the route's upstream that logs in with `credentials` (anonymous when absent). */
  clientFor: (route: UpstreamRoute, credentials: Credentials | undefined) => Upstream;
  ttlMs: number;
  now: () => number;
}

const MAX_DECISIONS = 10_000;

export class PassthroughChecker {
  readonly #deps: PassthroughDeps;
  readonly #decisions = new Map<string, { allowed: boolean; until: number }>();
  readonly #pending = new Map<string, Promise<boolean>>();

  constructor(deps: PassthroughDeps) {
    this.#deps = deps;
  }

  /** True when the upstream lets these credentials pull the route's repository. */
  async allowed(route: UpstreamRoute, authorization: string, credentials: Credentials | undefined): Promise<boolean> {
    const key = `${hashBytes(this.#deps.hasher, "sha256", new TextEncoder().encode(authorization))}\n${route.repository}`;
    const known = this.#decisions.get(key);
    if (known && known.until > this.#deps.now()) return known.allowed;
    let pending = this.#pending.get(key);
    if (!pending) {
      pending = this.#check(route, credentials)
        .then((allowed) => {
          this.#remember(key, allowed);
          return allowed;
        })
        .finally(() => this.#pending.delete(key));
      this.#pending.set(key, pending);
    }
    return pending;
  }

  async #check(route: UpstreamRoute, credentials: Credentials | undefined): Promise<boolean> {
    let res: Response;
    try {
      res = await this.#deps.clientFor(route, credentials).request(route.name, "tags/list", { query: "n=1" });
    } catch (err) {
      // The token service refusing these credentials is an answer; anything else is not.
      if (err instanceof OciError && err.code === "DENIED") return false;
      throw err instanceof OciError ? err : new OciError("UNAVAILABLE", `could not check access with upstream ${route.upstream.prefix}: ${(err as Error).message}`);
    }
    await res.body?.cancel();
    if (res.ok) return true;
    if (res.status === 401 || res.status === 403 || res.status === 404) return false;
    throw new OciError("UNAVAILABLE", `could not check access with upstream ${route.upstream.prefix}: it answered HTTP ${res.status}`);
  }

  #remember(key: string, allowed: boolean): void {
    if (this.#deps.ttlMs <= 0) return;
    this.#decisions.delete(key);
    if (this.#decisions.size >= MAX_DECISIONS) this.#decisions.delete(this.#decisions.keys().next().value!);
    this.#decisions.set(key, { allowed, until: this.#deps.now() + this.#deps.ttlMs });
  }
}
