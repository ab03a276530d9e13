// What skiff knows about well-known registries, so `--upstream https://registry-1.docker.io` works
// without extra flags: the names clients use for it, the hosts it sends tokens and blobs from, and
// how it spells single-component names.

export interface UpstreamPreset {
  aliases: string[];
  allowHosts: string[];
  upstreamName?: (name: string) => string;
}

const PRESETS: Record<string, UpstreamPreset> = {
  "registry-1.docker.io": {
    aliases: ["docker.io", "index.docker.io"],
    allowHosts: ["auth.docker.io", "production.cloudflare.docker.com"],
    upstreamName: (name) => (name.includes("/") ? name : `library/${name}`),
  },
};

export function upstreamPreset(url: string): UpstreamPreset | undefined {
  return PRESETS[new URL(url).host.toLowerCase()];
}
