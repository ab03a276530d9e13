// Runs a bundled Worker in workerd through Miniflare's API, as its own Node process (so the test
// runner's memory is not involved), with the bindings, compatibility date and flags of a wrangler
// config and a local R2 bucket. Unlike `wrangler dev` there is no proxy Worker and no inspector
// proxy in front: wrangler dev's inspector proxy forwards every DevTools event of the Worker (one
// per chunk of an outbound fetch body) to wrangler's Node process as a separate loopback request.
// Here the Worker's outbound fetch goes from workerd straight to the upstream.
//   node worker-runner.mjs '{"config": …, "script": …, "port": …, "persistDir": …, "vars": {…}}'
// With "v8Flags": […], workerd runs with those V8 flags (workerd-v8-flags.sh), e.g. a heap limit.
// A second Worker, local-r2-tools, shares the bucket (LOCAL_R2_TOOLS below).
// Prints "ready <url>" when serving; stops on SIGTERM or SIGINT.
import { createRequire } from "node:module";
import { dirname } from "node:path";

const { config, script, port, persistDir, vars = {}, inspectorPort, v8Flags } = JSON.parse(process.argv[2] ?? "{}");
if (!config || !script || !port || !persistDir) throw new Error("usage: worker-runner.mjs '{\"config\", \"script\", \"port\", \"persistDir\", \"vars\"}'");

// Wrangler's own Miniflare (a dependency of wrangler), so workerd is the one wrangler would run.
const require = createRequire(import.meta.url);
const wranglerPath = require.resolve("wrangler");
const { unstable_getMiniflareWorkerOptions } = require(wranglerPath);
const { Miniflare, Log, LogLevel } = createRequire(wranglerPath)("miniflare");

if (v8Flags?.length) {
  // Miniflare runs whatever MINIFLARE_WORKERD_PATH names as workerd, with the environment given here.
  const miniflarePath = createRequire(wranglerPath).resolve("miniflare");
  process.env.SKIFF_WORKERD = process.env.MINIFLARE_WORKERD_PATH ?? createRequire(miniflarePath)("workerd").default;
  process.env.SKIFF_WORKERD_V8_FLAGS = JSON.stringify(v8Flags);
  process.env.MINIFLARE_WORKERD_PATH = new URL("workerd-v8-flags.sh", import.meta.url).pathname;
}

// Miniflare's local R2 serves a multipart object (as skiff's R2Store writes anything over one part)
// by piping its parts one after another into one stream (#assembleMultipartValue in its R2 bucket
// worker), and that body does not hold back for a slow reader: workerd takes in the rest of the
// object, up to all of it (a Worker that only returns the R2 body of a 1 GiB object read at 20 MB/s:
// 1.4 GB VmHWM). A single-part object streams with backpressure (the same read: no growth), as R2
// itself does. `POST /single-part?key=K` rewrites object K as one part, reading
// it in 8 MiB ranges (a range spans at most two parts), so a test can measure skiff's own buffering.
// `GET /list?prefix=P` lists the bucket's keys, `PUT /object?key=K` writes one: for the sweep's tests.
const LOCAL_R2_TOOLS = `
const STEP = 8 * 1024 * 1024;
export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    const key = url.searchParams.get("key");
    if (request.method === "GET" && url.pathname === "/list") {
      const keys = [];
      let cursor;
      do {
        const page = await env.STORE.list({ prefix: url.searchParams.get("prefix") ?? "", cursor });
        keys.push(...page.objects.map((o) => o.key));
        cursor = page.truncated ? page.cursor : undefined;
      } while (cursor);
      return Response.json(keys);
    }
    if (request.method === "PUT" && url.pathname === "/object" && key) {
      await env.STORE.put(key, await request.arrayBuffer());
      return new Response(null, { status: 201 });
    }
    if (request.method !== "POST" || url.pathname !== "/single-part" || !key) return new Response("POST /single-part?key=K, GET /list?prefix=P, PUT /object?key=K", { status: 404 });
    const head = await env.STORE.head(key);
    if (!head) return new Response("no such object", { status: 404 });
    const body = new FixedLengthStream(head.size);
    const writer = body.writable.getWriter();
    const copy = (async () => {
      try {
        for (let offset = 0; offset < head.size; offset += STEP) {
          const range = { offset, length: Math.min(STEP, head.size - offset) };
          for await (const chunk of (await env.STORE.get(key, { range })).body) await writer.write(chunk);
        }
        await writer.close();
      } catch (err) {
        await writer.abort(err).catch(() => {});
        throw err;
      }
    })();
    const [written] = await Promise.all([env.STORE.put(key, body.readable), copy]);
    return new Response(String(written.size));
  },
};
`;

// What wrangler.toml says (compatibility date and flags, vars, the R2 binding), as wrangler dev would
// give it to Miniflare; the vars given here replace or add to the config's, as `--var` does.
const { workerOptions } = unstable_getMiniflareWorkerOptions(config);
// Beside it, the tools Worker (LOCAL_R2_TOOLS) on the same local bucket, reached with the header
// `MF-Route-Override: local-r2-tools`.
const mf = new Miniflare({
  workers: [
    {
      ...workerOptions,
      name: "skiff",
      modules: true,
      scriptPath: script,
      modulesRoot: dirname(script),
      bindings: { ...workerOptions.bindings, ...vars },
    },
    {
      name: "local-r2-tools",
      compatibilityDate: workerOptions.compatibilityDate,
      modules: true,
      script: LOCAL_R2_TOOLS,
      r2Buckets: { STORE: workerOptions.r2Buckets.STORE },
    },
  ],
  host: "127.0.0.1",
  port,
  // The placeholder `request.cf`: the default would fetch it from the Internet.
  cf: false,
  // GET /cdn-cgi/handler/scheduled runs the Worker's scheduled handler, as its cron trigger would.
  unsafeTriggerHandlers: true,
  // Local R2 (and any other local state) under persistDir.
  defaultPersistRoot: persistDir,
  // Request lines and warnings, as wrangler dev logs them.
  log: new Log(LogLevel.INFO),
  // The V8 inspector, when asked for (the harness reads the Worker's heap through it).
  ...(inspectorPort ? { inspectorPort } : {}),
});

let stopping = false;
const stop = async () => {
  if (stopping) return;
  stopping = true;
  try {
    await mf.dispose();
  } finally {
    process.exit(0);
  }
};
process.once("SIGTERM", stop);
process.once("SIGINT", stop);

const url = await mf.ready;
console.log(`ready ${url.href}`);
