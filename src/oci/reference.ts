// The OCI distribution-spec grammar for repository names, tags, digests and image references.

/** Longest repository name the distribution spec promises clients will accept. */
export const MAX_NAME_LENGTH = 255;

// One path component: lowercase alphanumerics joined by ".", "_", "__" or a run of "-".
const COMPONENT = "[a-z0-9]+(?:(?:\\.|_|__|-+)[a-z0-9]+)*";
const REPOSITORY_NAME = new RegExp(`^${COMPONENT}(?:/${COMPONENT})*$`);
const ONE_COMPONENT = new RegExp(`^${COMPONENT}$`);
const TAG = /^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$/;

export function isValidRepositoryName(name: string): boolean {
  return name.length <= MAX_NAME_LENGTH && REPOSITORY_NAME.test(name);
}

/** One component of a repository name (an upstream prefix, for one). */
export function isRepositoryComponent(s: string): boolean {
  return ONE_COMPONENT.test(s);
}

export function isValidTag(tag: string): boolean {
  return TAG.test(tag);
}

/**
 * A parsed digest, as a plain object so it compares with deep equality and survives JSON.
 * `value` is the canonical `algorithm:hex` string.
 */
export type Digest = { algorithm: "sha256" | "sha512"; hex: string; value: string };

// General grammar (OCI image spec, descriptor digests); only the algorithms below are accepted.
const DIGEST = /^([a-z0-9]+(?:[+._-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)$/;
const HEX_LENGTH: Record<Digest["algorithm"], number> = { sha256: 64, sha512: 128 };

/** Parses `sha256:<64 hex>` or `sha512:<128 hex>` (lowercase hex only); null for anything else. */
export function parseDigest(s: string): Digest | null {
  const m = DIGEST.exec(s);
  if (m === null) return null;
  const algorithm = m[1];
  const hex = m[2]!;
  if (algorithm !== "sha256" && algorithm !== "sha512") return null;
  if (hex.length !== HEX_LENGTH[algorithm] || !/^[0-9a-f]+$/.test(hex)) return null;
  return { algorithm, hex, value: s };
}

/**
 * Whether a manifest reference is meant as a digest rather than a tag. Tags cannot contain ":",
 * so any ":" means a digest, and a bad one is DIGEST_INVALID rather than a bad tag.
 */
export function isDigestLike(s: string): boolean {
  return s.includes(":");
}

export type ImageReference = { registry?: string; name: string; tag?: string; digest?: Digest };

// Registry host: DNS name, IPv4 address or bracketed IPv6 address, then an optional port.
const HOST_LABEL = "[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?";
const REGISTRY = new RegExp(`^(?:${HOST_LABEL}(?:\\.${HOST_LABEL})*|\\[[0-9a-fA-F:.]+\\])(?::([0-9]{1,5}))?$`);

function isValidRegistry(host: string): boolean {
  const m = REGISTRY.exec(host);
  if (m === null) return false;
  return m[1] === undefined || (Number(m[1]) >= 1 && Number(m[1]) <= 65535);
}

/**
 * The first path component names a registry when it looks like a host, as Docker decides it:
 * it has a "." or ":", is "localhost", or has uppercase letters (which a repository name cannot).
 */
function looksLikeRegistry(component: string): boolean {
  return (
    component.includes(".") ||
    component.includes(":") ||
    component === "localhost" ||
    component !== component.toLowerCase()
  );
}

/**
 * Parses `[host[:port]/]name[:tag][@digest]`. No defaults are filled in: `alpine` stays
 * `{ name: "alpine" }` (no docker.io, no library/). Throws an Error with a one-line message.
 */
export function parseImageReference(s: string): ImageReference {
  function fail(why: string): never {
    throw new Error(`invalid image reference ${JSON.stringify(s)}: ${why}`);
  }
  if (s === "") fail("empty");

  let rest = s;
  const ref: ImageReference = { name: "" };

  const at = rest.indexOf("@");
  if (at >= 0) {
    const digest = parseDigest(rest.slice(at + 1));
    if (digest === null) fail(`bad digest ${JSON.stringify(rest.slice(at + 1))}`);
    ref.digest = digest;
    rest = rest.slice(0, at);
  }

  // A tag follows the last ":" only if that ":" comes after the last "/" (else it is a port).
  const colon = rest.lastIndexOf(":");
  if (colon > rest.lastIndexOf("/")) {
    const tag = rest.slice(colon + 1);
    if (!isValidTag(tag)) fail(`bad tag ${JSON.stringify(tag)}`);
    ref.tag = tag;
    rest = rest.slice(0, colon);
  }

  const slash = rest.indexOf("/");
  if (slash >= 0 && looksLikeRegistry(rest.slice(0, slash))) {
    const registry = rest.slice(0, slash);
    if (!isValidRegistry(registry)) fail(`bad registry host ${JSON.stringify(registry)}`);
    ref.registry = registry;
    rest = rest.slice(slash + 1);
  }

  if (!isValidRepositoryName(rest)) fail(`bad repository name ${JSON.stringify(rest)}`);
  ref.name = rest;
  return ref;
}

export function formatImageReference(r: ImageReference): string {
  const registry = r.registry === undefined ? "" : `${r.registry}/`;
  const tag = r.tag === undefined ? "" : `:${r.tag}`;
  const digest = r.digest === undefined ? "" : `@${r.digest.value}`;
  return `${registry}${r.name}${tag}${digest}`;
}

const ROUTE_KINDS = ["manifests", "blobs", "tags"] as const;

/**
 * Splits a path below `/v2/` into repository name, endpoint kind and the rest, at the LAST
 * `/manifests/`, `/blobs/` or `/tags/`, so a repository may itself contain those words
 * (`a/blobs/manifests/latest` is repository `a/blobs`). The name is not validated here.
 */
export function splitRegistryPath(
  path: string,
): { name: string; kind: "manifests" | "blobs" | "tags"; rest: string } | null {
  let best: { index: number; kind: (typeof ROUTE_KINDS)[number] } | undefined;
  for (const kind of ROUTE_KINDS) {
    const index = path.lastIndexOf(`/${kind}/`);
    if (index > 0 && (best === undefined || index > best.index)) best = { index, kind };
  }
  if (best === undefined) return null;
  return {
    name: path.slice(0, best.index),
    kind: best.kind,
    rest: path.slice(best.index + best.kind.length + 2),
  };
}
