// The config of a mirror with one upstream, for setups without a config file (`skiff serve
// --upstream URL`, a Worker's UPSTREAM var): that upstream is also the default, under the preset's
// name when it is a known registry, else under its host name. Its settings arrive by the flags'
// names, from the flags and environment or from the Worker's vars; mistakes are SettingsErrors.
import { isRepositoryComponent } from "../oci/reference.ts";
import { presetForUrl } from "./presets.ts";
import { SettingsError } from "./serve-settings.ts";

export interface SingleUpstream {
  upstream: string;
  "upstream-user"?: string;
  "upstream-password"?: string;
  /** Serve what the credentials reach to anyone (in access mode open). */
  "upstream-public"?: boolean;
  /** Path of a CA bundle (runtimes with a file system). */
  "upstream-ca"?: string;
  access?: string;
  "allow-host"?: string[];
  "registry-alias"?: string[];
}

/** A config document (for resolveConfig) describing just this upstream. */
export function singleUpstreamConfig(s: SingleUpstream): unknown {
  const url = s.upstream.replace(/\/+$/, "");
  let host: string | undefined;
  try {
    const u = new URL(url);
    if (u.protocol === "http:" || u.protocol === "https:") host = u.hostname;
  } catch {
    // named below
  }
  if (host === undefined) throw new SettingsError("upstream", (n) => `${n("upstream")} must be a bare origin like https://host[:port], got ${JSON.stringify(s.upstream)}`);
  const username = s["upstream-user"];
  const password = s["upstream-password"];
  if ((username === undefined) !== (password === undefined)) {
    throw new SettingsError("upstream-user", (n) => `${n("upstream-user")} and ${n("upstream-password")} go together`);
  }
  const access = s.access ?? "open";
  if (access !== "open" && access !== "passthrough") {
    throw new SettingsError("access", (n) => `${n("access")} must be open or passthrough (credentials mode needs ${n("config")}), got ${JSON.stringify(access)}`);
  }
  if (username !== undefined && access === "open" && !s["upstream-public"]) {
    throw new SettingsError("upstream-public", (n) => `with upstream credentials the upstream is not public: set ${n("upstream-public")} to serve what they reach to anyone, or ${n("access")} passthrough`);
  }
  const prefix = presetForUrl(url)?.[0] ?? (isRepositoryComponent(host) ? host : "upstream");
  return {
    upstreams: {
      [prefix]: {
        url,
        ...(username !== undefined ? { credentials: { username, password } } : {}),
        ...(s["upstream-public"] ? { public: true } : {}),
        ...(s["upstream-ca"] !== undefined ? { ca: s["upstream-ca"] } : {}),
        allowHosts: s["allow-host"] ?? [],
        namespaces: s["registry-alias"] ?? [],
      },
    },
    access: { mode: access },
  };
}
