// Cold start of a program from a lazily mounted image: `npm run bench:cold-start [-- --write]`.
// A Debian image with python3 and numpy (debootstrap from Debian's archive, built once and kept in
// the bench cache) is pushed to a Distribution registry with skopeo; skiff serves it. For each link
// (loopback, and 100 Mbit/s with 20 ms RTT through bench/link-relay.mjs) and each case, a fresh
// `skiff mount --overlay` on an empty chunk cache runs the workload in a chroot, and the time from
// starting the mount to the workload's output is measured, with the bytes the agent fetched.
// Cases: cold edge (a fresh skiff store: pull and conversion included), warm edge with prefetch
// off, `--prefetch all` and a replayed prefetch list (recorded by `skiff record` first), and with
// deflated chunks: off, `--prefetch-nearby` and the list. The bytes the workload touches are the
// chunks in that list. The same workload after `ctr image pull`, after the stargz snapshotter's
// lazy pull of an eStargz copy, and after a pull through CRI with the skiff snapshotter
// (defaults, warm edge, cold node; bench/containerd.mjs), through the same links. Then warm reads: the
// largest file and a walk of the tree through a fully prefetched mount, against the same tree on
// local disk and fuse-native's own ceiling (bench/fuse-ceiling.mjs; bench/warm-reads.mjs). Needs root (FUSE, chroot,
// dropping the page cache) and Debian's debootstrap, docker-registry, skopeo, containerd, pigz,
// stargz-snapshotter, golang-go and golang-github-containerd-stargz-snapshotter-dev.
//   node bench/cold-start.mjs [--write] [--rounds 3]
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { gzipSync } from "node:zlib";
import { benchCacheDir as cacheDir, bootstrapWithCodec, coldStart as mountAndRun, copyBenchImage, OTHER_PYTHON_WORKLOAD, finishMount, PYTHON_PACKAGES, PYTHON_WORKLOAD as WORKLOAD, serveSkiff, warmPythonEdge } from "./lazy-mount.mjs";
import { startLinkRelay } from "./link-relay.mjs";
import { buildStargzSnapshotter, lazyPullAndRun, prepareEstargz, pullAndRun, skiffPullAndRun, startContainerd } from "./containerd.mjs";
import { machine, median, replaceSection } from "./report.mjs";
import { requireTools, root } from "./servers.mjs";
import { warmReads } from "./warm-reads.mjs";

const { values } = parseArgs({ options: { write: { type: "boolean", default: false }, rounds: { type: "string", default: "3" } } });
const ROUNDS = Number(values.rounds);
const LEARNED_KINDS = {
  first: "first node (nothing learned)",
  second: "second node (learned from the first)",
  otherLearned: "another program, after the first was learned",
  otherFresh: "another program, nothing learned",
};
const SLOW = { latencyMs: 10, rateBitsPerSecond: 100e6 }; // 20 ms RTT, 100 Mbit/s each way
const NEARBY = "256k"; // --prefetch-nearby: the best of 128k, 256k, 512k and 1m on the slow link
requireTools("debootstrap", "docker-registry", "skopeo", "chroot", "containerd", "ctr", "ctr-remote", "go", "unpigz");
if (process.getuid?.() !== 0) throw new Error("bench:cold-start needs root (FUSE mounts, chroot)");

const loadAtStart = loadavg();
const work = mkdtempSync(join(tmpdir(), "skiff-bench-cold-"));
const cleanups = [];
process.once("SIGINT", () => void finish().then(() => process.exit(130)));

const serve = (upstream, data) => serveSkiff(upstream, data, cleanups);

/** Mounts the image, runs the workload in a chroot (bench/lazy-mount.mjs). */
const coldStart = (imageUrl, extra) => mountAndRun(imageUrl, extra, { work, workload: WORKLOAD });

async function finish() {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => {});
  rmSync(work, { recursive: true, force: true });
}

/**
 * The same workload after `ctr image pull` (fetch, unpack into overlayfs), after the stargz
 * snapshotter's lazy pull of an eStargz copy, and after a pull through containerd's CRI plugin
 * with the skiff snapshotter (its defaults) from the warm edge
 * `edge`, each through the same links, on a fresh containerd (and snapshotter root: an empty chunk
 * cache) every run: { link, client, seconds, pullSeconds, mountSeconds, runSeconds }[] medians.
 */
async function containerdBaselines(registryBase, edge) {
  const stargz = await buildStargzSnapshotter(cacheDir);
  const host = new URL(registryBase).host;
  const prep = await startContainerd(work);
  try {
    const { seconds } = await prepareEstargz(prep, `${host}/bench/py:1`, `${host}/bench/py:esgz`);
    console.error(`eStargz copy converted and pushed in ${seconds.toFixed(0)} s`);
  } finally {
    await prep.stop();
  }
  // The edge is warm for the snapshotter too: the image's bootstrap as it asks for it (the proxy's
  // default parameters, the registry named in ?ns=), converted before any measured run.
  await bootstrapWithCodec(`${edge.url}/v2/bench/py/_skiff/bootstrap/1?ns=${encodeURIComponent(host)}`, "deflate-raw");
  // The slow link: between containerd (and the stargz snapshotter) and the registry; between
  // containerd (and the skiff snapshotter) and the skiff proxy, which is then containerd's mirror.
  const relay = await startLinkRelay({ target: { host: "127.0.0.1", port: Number(new URL(registryBase).port) }, ...SLOW });
  cleanups.push(() => relay.close());
  const edgeRelay = await startLinkRelay({ target: { host: "127.0.0.1", port: edge.port }, ...SLOW });
  cleanups.push(() => edgeRelay.close());
  const rows = [];
  const links = [
    ["loopback", host, edge.url],
    ["100 Mbit/s, 20 ms RTT", `127.0.0.1:${relay.port}`, `http://127.0.0.1:${edgeRelay.port}`],
  ];
  for (const [index, [link, via, proxy]] of links.entries()) {
    // The skiff snapshotter on a repository of its own each round (the same image, warm at the
    // edge, nothing learned): its first node, then a second node after the first one's report.
    const snapRepos = [];
    for (let round = 0; round < ROUNDS; round++) snapRepos.push(await copyBenchImage(registryBase, edge, `bench/snap-${index}-${round}`, host));
    const skiff = { skiff: { proxy, registries: [host] } };
    const clients = [
      ["containerd pull + unpack", () => `${via}/bench/py:1`, pullAndRun, {}],
      ["stargz snapshotter, eStargz", () => `${via}/bench/py:esgz`, lazyPullAndRun, { stargzBinary: stargz }],
      ["skiff snapshotter", (round) => `${host}/${snapRepos[round]}:1`, skiffPullAndRun, skiff],
      ["skiff snapshotter, second node", (round) => `${host}/${snapRepos[round]}:1`, skiffPullAndRun, skiff],
    ];
    for (const [client, refOf, pull, options] of clients) {
      const runs = [];
      for (let round = 0; round < ROUNDS; round++) {
        // What the run before left for the disk to write back (a full unpack is 330 MB) is written
        // first: no run waits behind another's writeback.
        execFileSync("sync");
        const containerd = await startContainerd(work, options);
        try {
          runs.push(await pull(containerd, refOf(round), WORKLOAD, { expect: "ready" }));
        } catch (err) {
          if (options.skiff) console.error(containerd.skiffLog());
          throw err;
        } finally {
          await containerd.stop();
        }
        const r = runs.at(-1);
        console.error(`${link}, ${client}: ${r.seconds.toFixed(2)} s (pull ${r.pullSeconds.toFixed(2)} s, mount ${r.mountSeconds.toFixed(2)} s, workload ${r.runSeconds.toFixed(2)} s)`);
      }
      const med = (key) => median(runs.map((r) => r[key]));
      rows.push({ link, client, seconds: med("seconds"), pullSeconds: med("pullSeconds"), mountSeconds: med("mountSeconds"), runSeconds: med("runSeconds") });
    }
  }
  return rows;
}

const containerdVersion = () => execFileSync("containerd", ["--version"], { encoding: "utf8" }).trim().split(/\s+/)[2];

try {
  // The warm edge: converted once for each codec before any measured run.
  const { layer, registry, edge } = await warmPythonEdge(work, cleanups);

  // The prefetch list, and the bytes the workload touches: the chunks it read.
  const list = join(work, "py.prefetch");
  execFileSync(process.execPath, [join(root, "bin", "skiff.js"), "record", `${edge.url}/bench/py:1`, "--output", list, "--cache", join(work, "record-cache"), "--", ...WORKLOAD], { stdio: ["ignore", "ignore", "inherit"] });
  const { Bootstrap } = await import(join(root, "dist", "src", "format", "decode.js"));
  const bootstrap = Bootstrap.decode(new Uint8Array(await (await fetch(`${edge.url}/v2/bench/py/_skiff/bootstrap/1`)).arrayBuffer()));
  const sizeOf = new Map(Array.from({ length: bootstrap.chunkCount }, (_, i) => bootstrap.chunk(i)).map((c) => [Buffer.from(c.digest).toString("hex"), c.size]));
  const touched = readFileSync(list, "utf8").trim().split("\n").slice(1).reduce((n, hex) => n + (sizeOf.get(hex) ?? 0), 0);

  const relay = await startLinkRelay({ target: { host: "127.0.0.1", port: edge.port }, ...SLOW });
  cleanups.push(() => relay.close());
  const links = [
    ["loopback", edge.url],
    ["100 Mbit/s, 20 ms RTT", `http://127.0.0.1:${relay.port}`],
  ];
  // These rows measure one setting each: learned prefetch off, so no run learns from another, and
  // nearby prefetch off unless the row says otherwise.
  const only = (codec, nearby = "0") => ["--codec", codec, "--no-learned-prefetch", "--prefetch-nearby", nearby];
  const cases = [
    ["cold edge", "none", "off", only("none")],
    ["warm edge", "none", "off", only("none")],
    ["warm edge", "none", "all", [...only("none"), "--prefetch", "all"]],
    ["warm edge", "none", "replayed list", [...only("none"), "--prefetch", list, "--prefetch", "all"]],
    ["warm edge", "deflate-raw", "off", only("deflate-raw")],
    ["warm edge", "deflate-raw", `nearby ${NEARBY}`, only("deflate-raw", NEARBY)],
    ["warm edge", "deflate-raw", "replayed list", [...only("deflate-raw"), "--prefetch", list, "--prefetch", "all"]],
  ];
  const rows = [];
  for (const [link, base] of links) {
    for (const [edgeState, codec, prefetch, flags] of cases) {
      const runs = [];
      for (let round = 0; round < ROUNDS; round++) {
        let url = `${base}/bench/py:1`;
        let fresh;
        let coldRelay;
        if (edgeState === "cold edge") {
          fresh = await serve(registry.base, mkdtempSync(join(work, "cold-edge-")));
          coldRelay = base === edge.url ? undefined : await startLinkRelay({ target: { host: "127.0.0.1", port: fresh.port }, ...SLOW });
          url = `${coldRelay ? `http://127.0.0.1:${coldRelay.port}` : fresh.url}/bench/py:1`;
        }
        const run = await coldStart(url, flags);
        const stats = await finishMount(run);
        await coldRelay?.close();
        await fresh?.stop();
        runs.push({ seconds: run.seconds, fetched: stats.bytesFetched, requests: stats.requests });
        console.error(`${link}, ${edgeState}, ${codec}, prefetch ${prefetch}: ${run.seconds.toFixed(2)} s, ${(stats.bytesFetched / 1e6).toFixed(1)} MB in ${stats.requests} requests`);
      }
      rows.push({ link, edgeState, codec, prefetch, seconds: median(runs.map((r) => r.seconds)), fetched: median(runs.map((r) => r.fetched)), requests: median(runs.map((r) => r.requests)) });
    }
  }

  // Learned prefetch with the defaults: each round on a repository of its own (the same image), so
  // that its first node has nothing learned. The first node runs the workload and reports what it
  // read first when it stops; a second node then starts with the edge's list. A second workload on
  // the same image, once after the first one was learned and once on a repository with nothing
  // learned, shows whether a list learned from one program slows another.
  const learnedRows = [];
  for (const [link, base] of links) {
    const runs = { first: [], second: [], otherLearned: [], otherFresh: [] };
    for (let round = 0; round < ROUNDS; round++) {
      const repo = await copyBenchImage(registry.base, edge, `bench/learn-${learnedRows.length}-${round}`);
      const fresh = await copyBenchImage(registry.base, edge, `bench/learn-${learnedRows.length}-${round}-other`);
      const measure = async (kind, url, workload) => {
        const run = await mountAndRun(url, [], { work, workload });
        const stats = await finishMount(run);
        runs[kind].push({ seconds: run.seconds, fetched: stats.bytesFetched, requests: stats.requests, learned: stats.learnedChunks ?? 0 });
        console.error(`${link}, defaults, ${kind}: ${run.seconds.toFixed(2)} s, ${(stats.bytesFetched / 1e6).toFixed(1)} MB in ${stats.requests} requests, ${stats.learnedChunks ?? 0} chunks learned`);
      };
      await measure("first", `${base}/${repo}:1`, WORKLOAD);
      await measure("second", `${base}/${repo}:1`, WORKLOAD);
      await measure("otherLearned", `${base}/${repo}:1`, OTHER_PYTHON_WORKLOAD);
      await measure("otherFresh", `${base}/${fresh}:1`, OTHER_PYTHON_WORKLOAD);
    }
    const med = (kind, key) => median(runs[kind].map((r) => r[key]));
    for (const kind of Object.keys(runs)) learnedRows.push({ link, kind, seconds: med(kind, "seconds"), fetched: med(kind, "fetched"), requests: med(kind, "requests"), learned: med(kind, "learned") });
  }

  const baselines = await containerdBaselines(registry.base, edge);
  const reads = await warmReads({ edgeUrl: edge.url, tarFile: layer.tarFile, work, cleanups, rounds: ROUNDS });

  const table = [
    "| link | edge | codec | prefetch | mount start to output (s) | fetched by the agent (MB) | requests | fetched ÷ touched |",
    "|---|---|---|---|---:|---:|---:|---:|",
    ...rows.map((r) => `| ${r.link} | ${r.edgeState} | ${r.codec} | ${r.prefetch} | ${r.seconds.toFixed(2)} | ${(r.fetched / 1e6).toFixed(1)} | ${r.requests} | ${(r.fetched / touched).toFixed(2)} |`),
  ];
  const learnedTable = [
    "| link | start | mount start to output (s) | fetched by the agent (MB) | requests | chunks learned | fetched ÷ touched |",
    "|---|---|---:|---:|---:|---:|---:|",
    ...learnedRows.map((r) => `| ${r.link} | ${LEARNED_KINDS[r.kind]} | ${r.seconds.toFixed(2)} | ${(r.fetched / 1e6).toFixed(1)} | ${r.requests} | ${r.learned} | ${r.kind.startsWith("other") ? "" : (r.fetched / touched).toFixed(2)} |`),
  ];
  // Each link: the baselines, then skiff's warm-edge rows, as multiples of the baselines' times.
  const versus = ["| link | start | to output (s) | × faster than pull + unpack | × faster than stargz |", "|---|---|---:|---:|---:|"];
  for (const link of links.map(([name]) => name)) {
    const full = baselines.find((b) => b.link === link && b.client.startsWith("containerd"));
    const lazy = baselines.find((b) => b.link === link && b.client.startsWith("stargz"));
    const snap = baselines.find((b) => b.link === link && b.client === "skiff snapshotter");
    const snapSecond = baselines.find((b) => b.link === link && b.client === "skiff snapshotter, second node");
    const line = (name, seconds) => `| ${link} | ${name} | ${seconds.toFixed(2)} | ${(full.seconds / seconds).toFixed(1)} | ${(lazy.seconds / seconds).toFixed(1)} |`;
    versus.push(line(`containerd: \`ctr image pull\` (${full.pullSeconds.toFixed(1)} s) + run`, full.seconds));
    versus.push(line(`stargz snapshotter: \`ctr-remote image rpull\` of the eStargz copy + run`, lazy.seconds));
    versus.push(line(`containerd + skiff snapshotter, first node (defaults): CRI PullImage (${snap.pullSeconds.toFixed(1)} s) + run`, snap.seconds));
    versus.push(line(`containerd + skiff snapshotter, second node (defaults, learned from the first)`, snapSecond.seconds));
    for (const r of learnedRows.filter((r) => r.link === link)) versus.push(line(`skiff mount, defaults: ${LEARNED_KINDS[r.kind]}`, r.seconds));
    for (const r of rows.filter((r) => r.link === link && r.edgeState === "warm edge")) versus.push(line(`skiff mount, ${r.codec}, prefetch ${r.prefetch}`, r.seconds));
  }
  // Where the containerd-driven starts spend their time.
  const steps = ["| link | start | pull (s) | snapshot + mount (s) | workload (s) | total (s) |", "|---|---|---:|---:|---:|---:|"];
  for (const b of baselines) steps.push(`| ${b.link} | ${b.client} | ${b.pullSeconds.toFixed(2)} | ${b.mountSeconds.toFixed(2)} | ${b.runSeconds.toFixed(2)} | ${b.seconds.toFixed(2)} |`);
  const load = (l) => l.map((x) => x.toFixed(1)).join(" / ");
  const body = `Machine: ${machine()}. Command: \`npm run bench:cold-start -- --write\` (median of ${ROUNDS} runs per row).
Load average (1 / 5 / 15 min) at the start of the run: ${load(loadAtStart)}; at the end: ${load(loadavg())}, on
${cpus().length} cores (a load above the core count means other work competed with the benchmark for the CPUs).

The image: Debian stable (debootstrap minbase) with ${PYTHON_PACKAGES.join(", ")}, one gzip layer of
${(layer.gz.length / 1e6).toFixed(0)} MB (${(layer.tarBytes / 1e6).toFixed(0)} MB uncompressed), in a Distribution registry on loopback with
skiff in front. The workload: \`${WORKLOAD.slice(0, 2).join(" ")} "${WORKLOAD[2]}"\` in a chroot over \`skiff mount --overlay\`, on
an empty chunk cache every run; time from starting the mount to the workload's output. It touches
${(touched / 1e6).toFixed(1)} MB: the chunks of the prefetch list \`skiff record\` wrote for it. Cold edge: a
fresh skiff store (pull from the registry and conversion included); warm edge: converted before.
The slow link is bench/link-relay.mjs between the agent and skiff. "All" keeps fetching after the
output; its "fetched" is what had arrived by the time the mount was stopped. "Fetched" is bytes on
the wire: with deflate-raw they are compressed, while "touched" counts the chunks uncompressed.
"Nearby" is \`--prefetch-nearby ${NEARBY}\`; a replayed list is \`--prefetch LIST --prefetch all\`.

${table.join("\n")}

With the defaults (no flags; learned prefetch on), each round on a repository of its own holding
the same image, warm at the edge with nothing learned yet: the first node runs the workload, and
reports what it read first when it stops; a second node (an empty chunk cache) then starts with
the list the edge merged, fetched behind its own reads. Then another program on the same image
(\`${OTHER_PYTHON_WORKLOAD[2]}\`), once on that repository (the first program's list learned) and once on
one with nothing learned: a list learned from one program must not slow another. "Touched" is the
first workload's, as above.

${learnedTable.join("\n")}

The same workload started the ways containerd starts it, in the same run and through the same links,
on a fresh containerd every run, after a \`sync\` (no run waits behind the writeback of the one before): a full \`ctr image pull\` (containerd ${containerdVersion()}, unpacking
with unpigz into overlayfs); the stargz snapshotter (Debian's stargz-snapshotter library, served by
bench/stargz/main.go with the library's defaults: on-demand fetches and a background fetch of each
layer) lazily pulling an eStargz copy made by \`ctr-remote image convert --estargz\` (no prefetch
landmark: no workload was run to make it); and containerd + skiff snapshotter: containerd's CRI
plugin with \`skiff snapshotter\` as its snapshotter, pulled through CRI's PullImage called from the
benchmark's own running process as kubelet calls it (\`skiff pull\` makes the same call from a new
process, whose start adds about half a second), the layers mounted lazily from the warm edge (the proxy had converted the image) on a cold
node (a new snapshotter root, so an empty chunk cache; its mounts daemon up before the pull, as on a node), with the snapshotter's defaults only, each
round on a repository of its own (nothing learned); then a second node on the same repository,
after the first one's mounts daemon reported what the container read first. For the first two the relay sits between containerd and
the registry; for skiff's, between the node and the proxy, which is containerd's registry mirror
(hosts.toml), so that containerd resolves the manifest and fetches the config through the relay
and the snapshotter fetches bootstraps and chunks through it. Each time runs from the start of the
pull to the workload's exit, the workload in a chroot on a snapshot of the image's rootfs. The
\`skiff mount\` rows are the warm-edge rows above.

${versus.join("\n")}

Where the containerd-driven starts spend their time (medians of each step, so they need not add up
to the total): the pull, preparing and mounting the rootfs snapshot, and the workload.

${steps.join("\n")}

The skiff snapshotter's pull is containerd resolving the image through the proxy and preparing
each layer: the snapshotter fetches the image's bootstrap, then the layers' (all at once), and has
them mounted. The snapshotter starts its mounts daemon when it starts, before the pull
(once per node). On a first node its workload reads as \`skiff mount\` does with nothing learned:
chunks fetched as files are read; on a second node each layer first fetches its share of the
learned list behind the reads. The stargz snapshotter's defaults also fetch each layer in the
background.

Reading the image once it is all in the node's chunk cache (\`--prefetch all\`, waited out), against
the same tree extracted on local disk; the kernel's caches dropped before each run (median of
${ROUNDS}):

| | through the mount | local disk | mount ÷ local | fuse-native doing nothing |
|---|---:|---:|---:|---:|
| sequential read of the largest file (${(reads.fileBytes / 1e6).toFixed(0)} MB) | ${reads.mountMBps.toFixed(0)} MB/s | ${reads.localMBps.toFixed(0)} MB/s | ${(reads.mountMBps / reads.localMBps).toFixed(2)} | ${reads.ceilingMBps.toFixed(0)} MB/s |
| \`find\` + \`stat\` of every entry (${reads.entries} entries) | ${reads.mountFindS.toFixed(2)} s | ${reads.localFindS.toFixed(2)} s | ${(reads.mountFindS / reads.localFindS).toFixed(2)} | ${reads.ceilingFindS.toFixed(2)} s |

The mount is served by skiff's own FUSE session over /dev/fuse (\`skiff mount\` as root). The last
column is bench/fuse-ceiling.mjs: a FUSE filesystem on fuse-native (libfuse 2) whose handlers answer
at once, with a file of the same size and a tree of about as many entries (flat: 100 per directory,
so its walk is only a rough match for the image's): what that binding costs by itself, libfuse 2
asking for at most 128 KiB per read and every request crossing from libfuse's thread to the JS
thread and back.`;
  console.log(body);
  if (values.write) replaceSection(join(root, "docs", "benchmarks.md"), "cold-start", "Cold start from a lazy mount", body);
} finally {
  await finish();
}
