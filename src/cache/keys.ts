// Store layout. Content lives once, by digest; what a repository may see is recorded as links under
// the repository, the way the Distribution registry scopes blobs. Names, tags and digests reaching
// here are already validated against the spec grammar.
import type { Digest } from "../oci/reference.ts";

const byDigest = (prefix: string, d: Digest) => `${prefix}/${d.algorithm}/${d.hex.slice(0, 2)}/${d.hex}`;

export const blobKey = (d: Digest) => byDigest("blobs", d);
export const manifestKey = (d: Digest) => byDigest("manifests", d);
export const manifestMetaKey = (d: Digest) => `${manifestKey(d)}.meta`;

// `_`-prefixed segments can't collide with a repository path component, which starts with [a-z0-9].
export const blobLinkKey = (name: string, d: Digest) => `repositories/${name}/_blobs/${d.algorithm}/${d.hex}`;
export const manifestLinkKey = (name: string, d: Digest) => `repositories/${name}/_manifests/${d.algorithm}/${d.hex}`;
export const tagKey = (name: string, tag: string, acceptKey: string) => `repositories/${name}/_tags/${tag}/${acceptKey}`;
