// `skiff mount` and `skiff umount`: the node agent's lazy FUSE mount (node-agent/, Node only).
import { readFile } from "node:fs/promises";
import { homedir } from "node:os";
import { join } from "node:path";
import { integerFlag, parseFlags, sizeFlag, UsageError } from "./args.ts";
import { InputError, parseProxyReference } from "./converted.ts";
import { CHUNK_CODECS } from "../format/chunk-codec.ts";
import { parseChunkSize } from "../format/params.ts";
import { trace } from "../../node-agent/src/trace.ts";

export const mountHelp = `Usage: skiff mount <proxy-url>/<name>[:TAG|@DIGEST] <mountpoint> [options]

Mounts an image served by a skiff proxy read-only over FUSE. Files are fetched chunk by chunk when
read, verified against their digests and kept in a local cache shared by every image on the node.
The image is pinned to the manifest digest it had at mount time. Runs until SIGINT/SIGTERM, then
unmounts (the overlay first).

Options:
  --cache DIR          chunk cache directory (default ~/.cache/skiff/chunks)
  --cache-size SIZE    cache size limit, least recently used chunks evicted first (default 10g)
  --overlay DIR        present a writable overlayfs at the mountpoint: the image as lowerdir
                       (mounted at DIR/lower), DIR/upper and DIR/work for changes
  --stats FILE         JSON counters, rewritten every second and at exit
  --timeout SECONDS    a read that can't be served in this time fails with EIO (default 30)
  --platform OS/ARCH   platform to pick from a multi-platform image (default: the proxy's)
  --codec none|deflate-raw
                       how chunks travel and are stored at the edge; deflate-raw sends about half
                       the bytes, none saves the node inflating them (default deflate-raw)
  --chunk-size SIZE    chunk size of the conversion, 64k to 16m (default: the proxy's, 1m)
  --token TOKEN        bearer token for the proxy (or $SKIFF_TOKEN)
  --user USER          user for the proxy (with --password or $SKIFF_PASSWORD)
  --password PASS      password for the proxy; prefer $SKIFF_PASSWORD (kept out of ps)
  --ca FILE            PEM bundle to trust for an https proxy
  --http-proxy URL     send every request to the proxy through this HTTP proxy, e.g. a Dragonfly
                       dfdaemon peer, so that nodes share chunks peer to peer
  --prefetch all|FILE  after mounting, fetch chunks in the background: every chunk (all) or those
                       of a prefetch list (FILE, see --record); repeat to chain, e.g.
                       --prefetch FILE --prefetch all (the list's chunks all come first).
                       Reads always go first
  --prefetch-rate SIZE limit prefetch to SIZE bytes per second, e.g. 20m (default: no limit)
  --prefetch-nearby SIZE|auto
                       when a read has to fetch, also fetch up to SIZE (e.g. 256k) of the chunks
                       stored after it in the layer, the files next to it, in the background,
                       and once two small files of a kind in one directory had to be fetched,
                       the others beside them; 0 turns it off (default auto: 256k while a round
                       trip to the proxy takes 10 ms or more, off on a faster link)
  --record FILE        write the chunks reads need, in the order first needed, as a prefetch list
  --no-learned-prefetch
                       don't fetch first the chunks the proxy learned this image reads first, and
                       don't report what this mount reads first (default: learned prefetch on)
  --no-program-prefetch
                       when a program or library is first read, don't fetch what the loader reads
                       next (its end, its segments that are not code, the libraries it loads) in
                       the background
  -h, --help           show this help

Example: skiff mount http://127.0.0.1:8080/library/alpine:3.19 /mnt/alpine --overlay /var/lib/skiff/alpine`;

export const umountHelp = `Usage: skiff umount <mountpoint>

Unmounts what 'skiff mount' mounted there (an overlay or the FUSE mount), lazily if it is stale.`;

// Nearby fetches compete with the reads for the link: past a few MiB they only slow them.
const MAX_NEARBY_BYTES = 16 * 2 ** 20;
/** The codec the node side asks for unless told (`--codec`): half the bytes on the wire. */
export const AGENT_DEFAULT_CODEC = "deflate-raw";

/** The flags `skiff mount` and `skiff record` share: where chunks are cached, how the proxy is reached, prefetch. */
export const agentFlags = {
  cache: { type: "string" },
  "cache-size": { type: "string" },
  timeout: { type: "string" },
  platform: { type: "string" },
  codec: { type: "string" },
  "chunk-size": { type: "string" },
  token: { type: "string" },
  user: { type: "string" },
  password: { type: "string" },
  ca: { type: "string" },
  "http-proxy": { type: "string" },
  prefetch: { type: "string", multiple: true },
  "prefetch-rate": { type: "string" },
  "prefetch-nearby": { type: "string" },
  "no-learned-prefetch": { type: "boolean" },
  "no-program-prefetch": { type: "boolean" },
} as const;

type AgentFlagValues = { [K in keyof typeof agentFlags]?: (typeof agentFlags)[K] extends { multiple: true } ? string[] : (typeof agentFlags)[K] extends { type: "boolean" } ? boolean : string };

/** What the shared flags and the image URL ask of the agent, checked. */
export async function agentMountOptions(image: string, values: AgentFlagValues) {
  let ref;
  try {
    ref = parseProxyReference(image);
  } catch (err) {
    if (err instanceof InputError) throw new UsageError(err.message);
    throw err;
  }
  const access = await proxyAccess(values);
  for (const source of values.prefetch ?? []) if (source === "") throw new UsageError("--prefetch needs all or a file");
  const prefetchRate = values["prefetch-rate"] === undefined ? undefined : sizeFlag(values["prefetch-rate"], "prefetch-rate", 0);
  if (prefetchRate === 0) throw new UsageError("--prefetch-rate must be more than 0");
  const autoNearby = (values["prefetch-nearby"] ?? "auto") === "auto";
  const { AUTO_NEARBY, PROGRAM_PREFETCH_BYTES } = await import("../../node-agent/src/lazy-reader.ts");
  const nearbyBytes = autoNearby ? AUTO_NEARBY.bytes : sizeFlag(values["prefetch-nearby"], "prefetch-nearby", 0);
  if (nearbyBytes > MAX_NEARBY_BYTES) throw new UsageError("--prefetch-nearby is at most 16m (--prefetch all fetches everything)");
  return {
    ref,
    proxy: ref.origin,
    name: ref.name,
    reference: ref.reference,
    cacheDir: values.cache ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), ".cache"), "skiff", "chunks"),
    cacheMaxBytes: sizeFlag(values["cache-size"], "cache-size", 10 * 2 ** 30),
    timeoutMs: integerFlag(values.timeout, "timeout", 30, 1, 3600) * 1000,
    platform: values.platform,
    codec: values.codec ?? AGENT_DEFAULT_CODEC,
    chunkSize: values["chunk-size"],
    ...access,
    prefetch: values.prefetch,
    prefetchBytesPerSecond: prefetchRate,
    nearbyBytes,
    nearbyMinRoundTripMs: autoNearby ? AUTO_NEARBY.minRoundTripMs : 0,
    learnedPrefetch: values["no-learned-prefetch"] !== true,
    programPrefetchBytes: values["no-program-prefetch"] ? 0 : PROGRAM_PREFETCH_BYTES,
  };
}

type ProxyAccessFlags = Pick<AgentFlagValues, "token" | "user" | "password" | "ca" | "http-proxy" | "codec" | "chunk-size">;

/**
 * How the node side reaches the proxy, from the flags `skiff mount`, `record` and `snapshotter`
 * share, checked: the credentials sent with every request, a CA bundle, an HTTP proxy; and the
 * conversion asked for (`--codec`, `--chunk-size`), checked only.
 */
export async function proxyAccess(values: ProxyAccessFlags): Promise<{ authorization?: string; ca?: string; httpProxy?: string }> {
  const token = values.token ?? process.env.SKIFF_TOKEN;
  const password = values.password ?? process.env.SKIFF_PASSWORD;
  if (token !== undefined && values.user !== undefined) throw new UsageError("use --token or --user/--password, not both");
  if (values.user !== undefined && password === undefined) throw new UsageError("--user needs --password or $SKIFF_PASSWORD");
  let ca: string | undefined;
  if (values.ca !== undefined) {
    try {
      ca = await readFile(values.ca, "utf8");
    } catch (err) {
      throw new UsageError(`cannot read --ca ${values.ca}: ${(err as Error).message}`);
    }
  }
  if (values.codec !== undefined && !CHUNK_CODECS.some((c) => c === values.codec)) throw new UsageError(`--codec must be one of ${CHUNK_CODECS.join(", ")}, got ${JSON.stringify(values.codec)}`);
  if (values["chunk-size"] !== undefined) {
    try {
      parseChunkSize(values["chunk-size"]);
    } catch (err) {
      throw new UsageError((err as Error).message);
    }
  }
  const httpProxy = values["http-proxy"];
  if (httpProxy !== undefined && !/^https?:\/\/[^\s/?#]+\/?$/.test(httpProxy)) throw new UsageError(`--http-proxy must be http(s)://HOST:PORT, got ${JSON.stringify(httpProxy)}`);
  const { basicAuthorization } = await import("../../node-agent/src/proxy-http.ts");
  const authorization = token !== undefined ? `Bearer ${token}` : values.user !== undefined ? basicAuthorization(values.user, password!) : undefined;
  return { authorization, ca, httpProxy };
}

export async function mountCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseFlags(argv, { ...agentFlags, overlay: { type: "string" }, stats: { type: "string" }, record: { type: "string" } }, true);
  if (values.help) {
    console.log(mountHelp);
    return 0;
  }
  if (positionals.length !== 2) throw new UsageError("expected an image URL and a mountpoint (see --help)");
  trace("agent-start");
  const { ref, ...options } = await agentMountOptions(positionals[0]!, values);
  const log = (m: string) => process.stderr.write(`skiff mount: ${m}\n`);
  const { mountLazily } = await import("../../node-agent/src/mount-image-lazily.ts");
  const mount = await mountLazily({ ...options, mountpoint: positionals[1]!, statsFile: values.stats, overlayDir: values.overlay, recordFile: values.record, log });
  console.log(`mounted ${ref.name}@${mount.manifestDigest} at ${positionals[1]}`);
  await new Promise<void>((resolve) => {
    process.once("SIGINT", resolve);
    process.once("SIGTERM", resolve);
  });
  await mount.stop();
  return 0;
}

export async function umountCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseFlags(argv, {}, true);
  if (values.help) {
    console.log(umountHelp);
    return 0;
  }
  if (positionals.length !== 1) throw new UsageError("expected a mountpoint (see --help)");
  const { recoverStaleMount, unmountPath } = await import("../../node-agent/src/mount-image-lazily.ts");
  if (!(await recoverStaleMount(positionals[0]!))) await unmountPath(positionals[0]!);
  return 0;
}
