// `skiff snapshotter`: containerd's remote snapshotter (node-agent/src/snapshotter, Node only).
import { mkdir } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import { integerFlag, parseFlags, sizeFlag, UsageError } from "./args.ts";
import { AGENT_DEFAULT_CODEC, proxyAccess } from "./mount.ts";

export const snapshotterHelp = `Usage: skiff snapshotter [--proxy URL] [options]

Serves containerd's snapshots API on a unix socket (a proxy plugin named e.g. "skiff"): an overlayfs
snapshotter for every layer, which mounts the layers of images pulled through CRI lazily from a skiff
proxy instead of letting containerd download them. A layer the proxy can't serve lazily is unpacked
by containerd as usual. Runs until SIGINT/SIGTERM; the lazy layers are served by a separate mounts
daemon, their FUSE connections held by a small keeper process, both outliving it, so restarting
the snapshotter (or the daemon) keeps containers running.
Setup for containerd and Kubernetes: docs/kubernetes.md.

Options:
  --proxy URL          the skiff proxy, e.g. http://10.0.0.1:8080 (without it no layer is lazy)
  --address PATH       unix socket to serve on (default /run/skiff/snapshotter.sock)
  --root DIR           snapshots, metadata and the chunk cache (default /var/lib/skiff)
  --cache-size SIZE    chunk cache of all images, least recently used evicted first (default 20g)
  --metrics HOST:PORT  Prometheus metrics at /metrics (default 127.0.0.1:9108; "off" for none)
  --timeout SECONDS    a read of a lazy layer that can't be served in this time fails with EIO
                       (default 30)
  --convert-timeout SECONDS
                       how long a pull waits for the proxy to convert an image before its layers
                       are unpacked normally (default 60)
  --codec none|deflate-raw
                       how chunks travel; deflate-raw sends about half the bytes (default
                       deflate-raw)
  --chunk-size SIZE    chunk size of the conversion, 64k to 16m (default: the proxy's)
  --platform OS/ARCH   platform to pick from a multi-platform image (default: the proxy's)
  --token TOKEN        bearer token for the proxy (or $SKIFF_TOKEN)
  --user USER          user for the proxy (with --password or $SKIFF_PASSWORD)
  --password PASS      password for the proxy; prefer $SKIFF_PASSWORD (kept out of ps)
  --ca FILE            PEM bundle to trust for an https proxy
  --http-proxy URL     send every request to the proxy through this HTTP proxy (a dfdaemon peer)
  --no-learned-prefetch
                       don't fetch first the chunks the proxy learned an image reads first, and
                       don't report what containers read first (default: learned prefetch on)
  --no-program-prefetch
                       when a program or library is first read, don't fetch what the loader reads
                       next (its end, its segments that are not code, the libraries it loads) in
                       the background
  --fill-layers        once an image's container has paused its reads for 5 s, fetch the rest of
                       its lazy layers in the background (reads go first; only while the chunk
                       cache is under 90 % full): the node then runs it without the proxy, as
                       after a full pull (default: only what is read, and its prefetch)
  --fuse-relay         relay every FUSE request through the FUSE keeper, as on kernels before 6.9
                       (default there): on newer ones the mounts daemon reads its connections
                       itself and the keeper only holds copies, for the case the daemon dies
  -h, --help           show this help

When ready it prints one line: skiff snapshotter listening on PATH`;

const flags = {
  proxy: { type: "string" },
  address: { type: "string" },
  root: { type: "string" },
  "cache-size": { type: "string" },
  metrics: { type: "string" },
  timeout: { type: "string" },
  "convert-timeout": { type: "string" },
  codec: { type: "string" },
  "chunk-size": { type: "string" },
  platform: { type: "string" },
  token: { type: "string" },
  user: { type: "string" },
  password: { type: "string" },
  ca: { type: "string" },
  "http-proxy": { type: "string" },
  "no-learned-prefetch": { type: "boolean" },
  "no-program-prefetch": { type: "boolean" },
  "fill-layers": { type: "boolean" },
  "fuse-relay": { type: "boolean" },
  // Internal: this process is the mounts daemon the snapshotter started, or the FUSE keeper the
  // mounts daemon started.
  "mounts-daemon": { type: "boolean" },
  "fuse-keeper": { type: "boolean" },
} as const;

export async function snapshotterCommand(argv: string[]): Promise<number> {
  const internalArgs = (flag: string) => [...process.execArgv, process.argv[1]!, "snapshotter", ...argv.filter((a) => a !== "--mounts-daemon" && a !== "--fuse-keeper"), flag];
  const { values, positionals } = parseFlags(argv, flags, false);
  if (values.help) {
    console.log(snapshotterHelp);
    return 0;
  }
  if (positionals.length > 0) throw new UsageError("takes no arguments (see --help)");
  const proxy = values.proxy;
  if (proxy !== undefined && !/^https?:\/\/[^\s/?#]+\/?$/.test(proxy)) throw new UsageError(`--proxy must be http(s)://HOST[:PORT], got ${JSON.stringify(proxy)}`);
  const metricsAddress = values.metrics ?? "127.0.0.1:9108";
  if (metricsAddress !== "off" && !/^(\[[0-9a-fA-F:]+\]|[^\s:/]+):\d{1,5}$/.test(metricsAddress)) throw new UsageError(`--metrics must be HOST:PORT or off, got ${JSON.stringify(metricsAddress)}`);
  const access = await proxyAccess(values);
  const root = resolve(values.root ?? "/var/lib/skiff");
  const options = {
    proxy: proxy?.replace(/\/+$/, ""),
    address: resolve(values.address ?? "/run/skiff/snapshotter.sock"),
    root,
    cacheMaxBytes: sizeFlag(values["cache-size"], "cache-size", 20 * 2 ** 30),
    metricsAddress: metricsAddress === "off" ? undefined : metricsAddress,
    timeoutMs: integerFlag(values.timeout, "timeout", 30, 1, 3600) * 1000,
    convertTimeoutMs: integerFlag(values["convert-timeout"], "convert-timeout", 60, 1, 3600) * 1000,
    learnedPrefetch: values["no-learned-prefetch"] !== true,
    programPrefetch: values["no-program-prefetch"] !== true,
    fillLayers: values["fill-layers"] === true,
    direct: values["fuse-relay"] ? false : undefined,
    codec: values.codec ?? AGENT_DEFAULT_CODEC,
    chunkSize: values["chunk-size"],
    platform: values.platform,
    ...access,
    // The daemon and the keeper are this command again with the same settings: credentials reach
    // them the same way.
    daemonArgs: internalArgs("--mounts-daemon"),
    keeperArgs: internalArgs("--fuse-keeper"),
    log: (m: string) => process.stderr.write(`skiff snapshotter${values["mounts-daemon"] ? " (mounts)" : values["fuse-keeper"] ? " (fuse keeper)" : ""}: ${m}\n`),
  };
  if (values["fuse-keeper"]) {
    const { runKeeperProcess, keeperSocketIn, takenOverSocketIn } = await import("../../node-agent/src/fuse/keeper.ts");
    const { handedDownToThisProcess } = await import("../../node-agent/src/fuse/connection-holder.ts");
    const handedDown = handedDownToThisProcess(root);
    const socket = handedDown ? takenOverSocketIn(root, process.pid) : keeperSocketIn(root);
    return runKeeperProcess({ socket, timeoutMs: options.timeoutMs, log: options.log, handedDown });
  }
  const { runSnapshotter, runDaemon } = await import("../../node-agent/src/snapshotter/run.ts");
  if (values["mounts-daemon"]) {
    await runDaemon(options);
    return 0;
  }
  await mkdir(dirname(options.address), { recursive: true });
  const running = await runSnapshotter(options);
  console.log(`skiff snapshotter listening on ${options.address}`);
  await new Promise<void>((done) => {
    process.once("SIGINT", done);
    process.once("SIGTERM", done);
  });
  await running.close();
  return 0;
}
