// Learned prefetch through a proxy at `url`, the same on every runtime: convert an image, report some
// of its chunks (and a digest that is none of them) with the node side's client, read the merged
// list back. Node's own suite (learned-prefetch.test.ts) covers the refusals and limits; the Deno and
// Worker suites use this to show the route works there too.
import { fetchLearnedReads, reportReads } from "../../../src/client/lazy-api.ts";
import { Bootstrap } from "../../../src/format/decode.ts";
import { toHex } from "../../../src/hash/hasher.ts";

export interface LearnedRoundTrip {
  /** The image bootstrap's chunk digests (hex). */
  chunks: string[];
  /** What the proxy served before the report (null: 404) and after. */
  before: string[] | null;
  after: string[] | null;
  /** What the report sent: the first, the last and the second chunk, with a foreign digest between. */
  reported: string[];
}

/** The image bootstrap of `repo` at `reference` (`?query` included) through the proxy, waiting out 202s: its chunk digests (hex), manifest digest and params. */
export async function convertedImage(url: string, repo: string, reference: string): Promise<{ chunks: string[]; manifest: string; params: string }> {
  const bootstrapUrl = `${url}/v2/${repo}/_skiff/bootstrap/${reference}`;
  let res = await fetch(bootstrapUrl, { signal: AbortSignal.timeout(120_000) });
  for (let i = 0; i < 60 && res.status === 202; i++) {
    await res.body?.cancel();
    await new Promise((r) => setTimeout(r, 1000));
    res = await fetch(bootstrapUrl, { signal: AbortSignal.timeout(120_000) });
  }
  if (res.status !== 200) throw new Error(`bootstrap of ${repo}:${reference}: HTTP ${res.status} ${(await res.text()).slice(0, 300)}`);
  const bootstrap = Bootstrap.decode(new Uint8Array(await res.arrayBuffer()));
  const chunks = Array.from({ length: bootstrap.chunkCount }, (_, i) => toHex(bootstrap.chunk(i).digest));
  return { chunks, manifest: res.headers.get("skiff-manifest-digest")!, params: res.headers.get("skiff-params")! };
}

export async function learnedRoundTrip(url: string, repo: string, reference: string): Promise<LearnedRoundTrip> {
  const { chunks, manifest, params } = await convertedImage(url, repo, reference);
  const before = await fetchLearnedReads(url, repo, manifest, params);
  const reported = [chunks.at(-1)!, "f".repeat(64), chunks[0]!, chunks[1]!];
  await reportReads(url, repo, manifest, params, reported);
  return { chunks, before, after: await fetchLearnedReads(url, repo, manifest, params), reported };
}
