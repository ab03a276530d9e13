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

// Converted layers and images. The segment `params` names everything the bytes depend on besides
// the source (format version, chunk size, codec), so a change of any of them is a new key.
const convertedLayer = (layer: Digest, params: string) => `converted/layers/${layer.algorithm}/${layer.hex.slice(0, 2)}/${layer.hex}/${params}`;
export const layerDataKey = (layer: Digest, params: string) => `${convertedLayer(layer, params)}/data`;
export const layerBootstrapKey = (layer: Digest, params: string) => `${convertedLayer(layer, params)}/bootstrap`;
// A conversion in steps: where it stopped, the data written by each step after the first (named by
// the chunk ordinal it began at; the first writes at the data key itself), and who is converting.
export const layerCheckpointKey = (layer: Digest, params: string) => `${convertedLayer(layer, params)}/steps/checkpoint`;
export const layerSegmentKey = (layer: Digest, params: string, fromChunk: number) => `${convertedLayer(layer, params)}/steps/segment-${fromChunk}`;
export const layerLeaseKey = (layer: Digest, params: string) => `${convertedLayer(layer, params)}/steps/lease`;
// A blob fetched from the upstream in steps (Workers): where it stopped, and who is fetching it.
// Not under blobs/, so no reader or eviction mistakes them for a blob.
const blobFetch = (d: Digest) => `fetches/${d.algorithm}/${d.hex.slice(0, 2)}/${d.hex}`;
export const blobFetchCheckpointKey = (d: Digest) => `${blobFetch(d)}/checkpoint`;
export const blobFetchLeaseKey = (d: Digest) => `${blobFetch(d)}/lease`;
/** `platform` is `os/arch[/variant]`; it becomes one segment with `-` between its parts. */
export const imageBootstrapKey = (manifest: Digest, params: string, platform: string) =>
  `converted/images/${manifest.algorithm}/${manifest.hex.slice(0, 2)}/${manifest.hex}/${params}/${platform.replaceAll("/", "-")}`;
/**
 * What the nodes pulling a repository's image read first (src/lazy/learned-reads.ts): under the
 * repository, so one repository's reports never show in another's list for the same image.
 */
export const learnedReadsKey = (name: string, manifest: Digest, params: string) => `repositories/${name}/_learned/${manifest.algorithm}/${manifest.hex}/${params}`;

/**
 * What goes when `key` is evicted (./bounded.ts), or null for what is never evicted: manifests,
 * tags and repository links (small, and what a cached image needs to be found), and conversions in
 * progress (their steps, swept by ./gc.ts instead). A converted layer's data and bootstrap go
 * together: one without the other is of no use.
 */
export function evictionUnit(key: string): string | null {
  if (key.startsWith("blobs/") || key.startsWith("converted/images/")) return key;
  if (key.startsWith("converted/layers/")) return /^(converted\/layers\/[^/]+\/[^/]+\/[^/]+\/[^/]+)\/(data|bootstrap)$/.exec(key)?.[1] ?? null;
  if (/^repositories\/.+\/_learned\//.test(key)) return key;
  return null;
}

/** The digest `key` (a blobKey) stores, or null for any other key. */
export function blobKeyDigest(key: string): string | null {
  const m = /^blobs\/([a-z0-9]+)\/[0-9a-f]{2}\/([0-9a-f]+)$/.exec(key);
  return m ? `${m[1]}:${m[2]}` : null;
}
