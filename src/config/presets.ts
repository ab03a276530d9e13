// What skiff knows about well-known registries, so a config entry `"ghcr.io": {}` just works: the
// origin, the hosts it sends tokens and blobs from, the names clients use for it in containerd's
// `?ns=`, and how it spells single-component names.

export interface UpstreamPreset {
  url: string;
  allowHosts: string[];
  namespaces: string[];
  upstreamName?: (name: string) => string;
}

export const PRESETS: Record<string, UpstreamPreset> = {
  "docker.io": {
    url: "https://registry-1.docker.io",
    // Token service, and the storage hosts blob requests are redirected to (Cloudflare CDN, R2).
    allowHosts: ["auth.docker.io", "production.cloudflare.docker.com", "*.r2.cloudflarestorage.com"],
    namespaces: ["docker.io", "index.docker.io", "registry-1.docker.io"],
    upstreamName: (name) => (name.includes("/") ? name : `library/${name}`),
  },
  "ghcr.io": {
    url: "https://ghcr.io",
    allowHosts: ["pkg-containers.githubusercontent.com"],
    namespaces: ["ghcr.io"],
  },
  "quay.io": {
    url: "https://quay.io",
    allowHosts: ["cdn.quay.io", "cdn01.quay.io", "cdn02.quay.io", "cdn03.quay.io", "quayio-production-s3.s3.amazonaws.com"],
    namespaces: ["quay.io"],
  },
  "registry.k8s.io": {
    // Redirects every request to a nearby Artifact Registry, and blobs to S3 buckets near the client.
    url: "https://registry.k8s.io",
    allowHosts: ["*.pkg.dev", "*.amazonaws.com"],
    namespaces: ["registry.k8s.io", "k8s.gcr.io"],
  },
};

/** The preset whose registry lives at `url`'s origin, with its name. */
export function presetForUrl(url: string): [string, UpstreamPreset] | undefined {
  const origin = new URL(url).origin;
  return Object.entries(PRESETS).find(([, preset]) => new URL(preset.url).origin === origin);
}
