// Runs a bundled Worker in workerd through Miniflare's API, as its own Node process (so the test
// runner's memory is not involved), with the bindings, compatibility date and flags of a wrangler
// config and a local R2 bucket. Unlike `wrangler dev` there is no proxy Worker and no inspector
// proxy in front: wrangler dev's inspector proxy forwards every DevTools event of the Worker (one
// per chunk of an outbound fetch body) to wrangler's Node process as a separate loopback request.
// Here the Worker's outbound fetch goes from workerd straight to the upstream.
//   node worker-runner.mjs '{"config": …, "script": …, "port": …, "persistDir": …, "vars": {…}}'
// Prints "ready <url>" when serving; stops on SIGTERM or SIGINT.
import { createRequire } from "node:module";
import { dirname } from "node:path";

const { config, script, port, persistDir, vars = {} } = JSON.parse(process.argv[2] ?? "{}");
if (!config || !script || !port || !persistDir) throw new Error("usage: worker-runner.mjs '{\"config\", \"script\", \"port\", \"persistDir\", \"vars\"}'");

// Wrangler's own Miniflare (a dependency of wrangler), so workerd is the one wrangler would run.
const require = createRequire(import.meta.url);
const wranglerPath = require.resolve("wrangler");
const { unstable_getMiniflareWorkerOptions } = require(wranglerPath);
const { Miniflare, Log, LogLevel } = createRequire(wranglerPath)("miniflare");

// What wrangler.toml says (compatibility date and flags, vars, the R2 binding), as wrangler dev would
// give it to Miniflare; the vars given here replace or add to the config's, as `--var` does.
const { workerOptions } = unstable_getMiniflareWorkerOptions(config);
const mf = new Miniflare({
  ...workerOptions,
  modules: true,
  scriptPath: script,
  modulesRoot: dirname(script),
  bindings: { ...workerOptions.bindings, ...vars },
  host: "127.0.0.1",
  port,
  // The placeholder `request.cf`: the default would fetch it from the Internet.
  cf: false,
  // Local R2 (and any other local state) under persistDir.
  defaultPersistRoot: persistDir,
  // Request lines and warnings, as wrangler dev logs them.
  log: new Log(LogLevel.INFO),
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
