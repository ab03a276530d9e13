// The config of a mirror with one upstream, for setups without a config file (`skiff serve
// --upstream URL`, a Worker's UPSTREAM variable): that upstream is also the default, under the
// preset's name when it is a known registry, else under its host name.
import { isRepositoryComponent } from "../oci/reference.ts";
import { presetForUrl } from "./presets.ts";

export interface SingleUpstream {
  url: string;
  credentials?: { username: string; password: string };
  public?: boolean;
  /** Path of a CA bundle (runtimes with a file system). */
  ca?: string;
  allowHosts?: string[];
  namespaces?: string[];
  access?: "open" | "passthrough";
}

/** A config document (for resolveConfig) describing just this upstream. */
export function singleUpstreamConfig(u: SingleUpstream): unknown {
  const url = u.url.replace(/\/+$/, "");
  let host = "";
  try {
    host = new URL(url).hostname;
  } catch {
    // resolveConfig names the bad URL.
  }
  const prefix = presetForUrl(url)?.[0] ?? (isRepositoryComponent(host) ? host : "upstream");
  return {
    upstreams: {
      [prefix]: {
        url,
        ...(u.credentials ? { credentials: u.credentials } : {}),
        ...(u.public !== undefined ? { public: u.public } : {}),
        ...(u.ca !== undefined ? { ca: u.ca } : {}),
        allowHosts: u.allowHosts ?? [],
        namespaces: u.namespaces ?? [],
      },
    },
    access: { mode: u.access ?? "open" },
  };
}
