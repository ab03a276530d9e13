// Routing a client's repository name to one of the configured upstreams (docs/configuration.md):
// containerd's `?ns=` first, then a leading prefix, then the default upstream. Inside skiff a
// repository is known by its id `PREFIX/NAME` (NAME as the upstream spells it), so equal names on
// two registries never share a cache entry; `request` takes such an id and asks the right upstream.
import { OciError } from "./errors.ts";
import type { Upstream, UpstreamRequest } from "./upstream.ts";

/** What the caches need of an upstream: a request about a repository, named by its id. */
export interface RegistryClient {
  request(repository: string, path: string, req?: UpstreamRequest): Promise<Response>;
}

/** What routing needs of an upstream's configuration (src/config's UpstreamConfig is one). */
export interface RoutedUpstream {
  /** The leading name segment that selects this upstream, and the first segment of its repository ids. */
  prefix: string;
  /** Registry names containerd may send as `?ns=` for this upstream. */
  namespaces: readonly string[];
  /** The repository name as the upstream spells it, e.g. `library/alpine` for `alpine` on Docker Hub. */
  upstreamName(clientName: string): string;
}

export interface Route<C extends RoutedUpstream = RoutedUpstream> {
  /** `PREFIX/NAME`: the key of everything cached for this repository. */
  repository: string;
  /** The repository name as the upstream spells it. */
  name: string;
  upstream: C;
}

export class Upstreams<C extends RoutedUpstream = RoutedUpstream> implements RegistryClient {
  readonly #byPrefix = new Map<string, { config: C; client: Upstream }>();
  readonly #byNamespace = new Map<string, C>();
  readonly #default: C | undefined;

  constructor(configs: C[], defaultPrefix: string | undefined, client: (config: C) => Upstream) {
    for (const config of configs) {
      this.#byPrefix.set(config.prefix, { config, client: client(config) });
      for (const ns of config.namespaces) this.#byNamespace.set(ns, config);
    }
    this.#default = defaultPrefix === undefined ? undefined : this.#byPrefix.get(defaultPrefix)?.config;
  }

  /** The upstream and repository a client means by `name` (already checked against the grammar). */
  route(name: string, ns: string | undefined): Route<C> {
    if (ns !== undefined) {
      const config = this.#byNamespace.get(ns.toLowerCase());
      if (!config) throw new OciError("NAME_UNKNOWN", `registry ${JSON.stringify(ns.slice(0, 200))} is not served by this mirror`);
      return this.#route(config, name);
    }
    const slash = name.indexOf("/");
    const prefixed = slash > 0 ? this.#byPrefix.get(name.slice(0, slash)) : undefined;
    if (prefixed) return this.#route(prefixed.config, name.slice(slash + 1));
    if (!this.#default) {
      throw new OciError("NAME_UNKNOWN", `no upstream serves ${JSON.stringify(name.slice(0, 200))}: start the name with one of ${[...this.#byPrefix.keys()].join(", ")}`);
    }
    return this.#route(this.#default, name);
  }

  #route(config: C, clientName: string): Route<C> {
    const name = config.upstreamName(clientName);
    return { repository: `${config.prefix}/${name}`, name, upstream: config };
  }

  request(repository: string, path: string, req?: UpstreamRequest): Promise<Response> {
    const slash = repository.indexOf("/");
    const entry = this.#byPrefix.get(repository.slice(0, slash));
    if (slash <= 0 || !entry) throw new Error(`not a repository id: ${repository}`);
    return entry.client.request(repository.slice(slash + 1), path, req);
  }

  /** The configuration of the upstream holding a repository id. */
  configOf(repository: string): C {
    const entry = this.#byPrefix.get(repository.slice(0, repository.indexOf("/")));
    if (!entry) throw new Error(`not a repository id: ${repository}`);
    return entry.config;
  }
}
