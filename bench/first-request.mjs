// What a process's first HTTP request costs it: `node bench/first-request.mjs [--rounds 7]`.
// A mount is on a container's critical path, and the agent makes one request (the image's
// bootstrap) right after it starts. A local server answers 1 MiB; each round starts fresh Node
// processes that time one GET of it, to the response headers and to the body's end, with Node's
// global fetch and with node:http (the agent's client, node-agent/src/node-http-fetch.ts). Loopback only.
import { execFile } from "node:child_process";
import { once } from "node:events";
import { createServer } from "node:http";
import { loadavg } from "node:os";
import { parseArgs } from "node:util";
import { median } from "./report.mjs";

const { values } = parseArgs({ options: { rounds: { type: "string", default: "7" } } });
const ROUNDS = Math.min(50, Math.max(1, Number(values.rounds)));
const body = Buffer.alloc(1 << 20, 7);
const server = createServer((_req, res) => res.end(body)).listen(0, "127.0.0.1");
await once(server, "listening");
const url = `http://127.0.0.1:${server.address().port}/`;

// Each child prints "headers_ms body_ms", timed from just before the request.
const clients = {
  "global fetch": `const t=performance.now();const r=await fetch(${JSON.stringify(url)});const h=performance.now();await r.arrayBuffer();console.log(h-t,performance.now()-t)`,
  "node:http": `import{get}from"node:http";const t=performance.now();get(${JSON.stringify(url)},(r)=>{const h=performance.now();r.on("data",()=>{});r.on("end",()=>console.log(h-t,performance.now()-t))})`,
};
const times = Object.fromEntries(Object.keys(clients).map((k) => [k, { headers: [], body: [] }]));
const load = loadavg()[0];
for (let round = 0; round < ROUNDS; round++) {
  for (const [name, source] of Object.entries(clients)) {
    // Asynchronously: this process serves the request.
    const out = await new Promise((resolve, reject) =>
      execFile(process.execPath, ["--input-type=module", "-e", source], { timeout: 30_000 }, (err, stdout) => (err ? reject(err) : resolve(stdout))),
    );
    const [headers, all] = out.trim().split(" ").map(Number);
    times[name].headers.push(headers);
    times[name].body.push(all);
  }
}
server.close();
console.log(`first request of a fresh process, 1 MiB on loopback, median of ${ROUNDS} (load ${load.toFixed(1)}, Node ${process.version}):`);
for (const [name, t] of Object.entries(times)) console.log(`  ${name}: headers ${median(t.headers).toFixed(1)} ms, body end ${median(t.body).toFixed(1)} ms`);
