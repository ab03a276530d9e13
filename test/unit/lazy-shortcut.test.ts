// The shortcut's lazy half (src/http/lazy-shortcut.ts): every request of a table is sent to the app
// alone (the shortcut bypassed) and the way the Node entry serves it (the shortcut first, the app
// when it declines), and the two answers must agree in status, headers and body, and in what they
// count. The table covers what the shortcut answers itself (ranges of a data blob, whole chunks and
// their ranges, the access decision's refusals) and what it must leave to the app.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { afterEach, describe, expect, it } from "vitest";
import { resolveConfig } from "../../src/config/config.ts";
import { Bootstrap } from "../../src/format/decode.ts";
import { toHex } from "../../src/hash/hasher.ts";
import { nodeHasher } from "../../src/hash/node.ts";
import { createApp } from "../../src/http/app.ts";
import { counters, delta, lower } from "./shortcut-compare.ts";
import { FsStore } from "../../src/store/fs.ts";
import { layerDataKey } from "../../src/store/keys.ts";
import { parseDigest } from "../../src/oci/reference.ts";
import { Prng, tarArchive } from "../e2e/harness/images.ts";
import { FakeRegistry } from "./fakes.ts";

const TOKEN_SECRET = "0123456789abcdef0123456789abcdef";
const basic = (username: string, password: string) => `Basic ${Buffer.from(`${username}:${password}`).toString("base64")}`;
/** The headers the comparison looks at (all the others are compared too, as a whole). */
const RELEVANT = ["content-range", "content-length", "content-type", "etag", "cache-control", "docker-content-digest", "www-authenticate", "accept-ranges", "retry-after", "allow"];

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

interface Answer {
  status: number;
  headers: Record<string, string>;
  body: Buffer;
}

/** A converted one-layer image in team/app (also pushed as team/copy), behind skiff with `access`. */
async function setup(access?: Record<string, unknown>, codec = "none") {
  const upstream = new FakeRegistry();
  const prng = new Prng("lazy-shortcut");
  const layer = new Uint8Array(
    gzipSync(
      tarArchive([
        { name: "big", type: "file", data: prng.bytes(2_500_000) },
        { name: "text", type: "file", data: Buffer.from("lazy shortcut\n".repeat(200_000)) },
        { name: "small", type: "file", data: prng.bytes(3000) },
      ]),
    ),
  );
  const [layerDigest] = upstream.addImage("team/app", "v1", [layer]);
  upstream.addImage("team/copy", "v1", [layer]);
  const dataDir = await mkdtemp(join(tmpdir(), "skiff-lazy-shortcut-"));
  cleanups.push(() => rm(dataDir, { recursive: true, force: true }));
  const config = resolveConfig({ upstreams: { up: { url: upstream.origin, public: access === undefined } }, ...(access ? { access } : {}) }, {});
  const store = await new FsStore(dataDir).init();
  let clock = Date.now();
  const skiff = createApp({ config, fetchFor: () => upstream.fetch, store, hasher: nodeHasher, convertWaitSeconds: 60, noneFirst: false, now: () => clock });

  const viaApp = async (target: string, fields: Record<string, string> = {}, method = "GET"): Promise<Answer> => {
    const res = (await skiff.app.fetch(new Request(`http://skiff.test${target}`, { method, headers: fields }))) as Response;
    return { status: res.status, headers: Object.fromEntries(res.headers), body: Buffer.from(await res.arrayBuffer()) };
  };
  /** As the Node entry serves it: the shortcut first; `shortcut` says whether it answered. */
  const viaEntry = async (target: string, fields: Record<string, string> = {}, method = "GET"): Promise<Answer & { shortcut: boolean }> => {
    const answer = await skiff.shortcut({ method, target, url: `http://skiff.test${target}`, headers: new Headers(fields) });
    if (!answer) return { ...(await viaApp(target, fields, method)), shortcut: false };
    const body = Buffer.from(answer.body ?? new Uint8Array()); // a copy: the buffer goes back to the pool
    answer.written?.();
    return { status: answer.status, headers: lower(answer.headers), body, shortcut: true };
  };
  return {
    skiff,
    store,
    upstream,
    layerDigest: layerDigest!,
    viaApp,
    viaEntry,
    advance: (ms: number) => void (clock += ms),
    /** Converts the image as `auth` and reads its bootstrap: the params, the layer's chunks and data size. */
    async convert(fields: Record<string, string> = {}) {
      const res = await viaApp(`/v2/up/team/app/_skiff/bootstrap/v1?codec=${codec}`, fields);
      expect(res.status, res.body.toString().slice(0, 300)).toBe(200);
      const bootstrap = Bootstrap.decode(new Uint8Array(res.body));
      const params = res.headers["skiff-params"]!;
      const chunks = Array.from({ length: bootstrap.chunkCount }, (_, i) => bootstrap.chunk(i));
      return { params, chunks, dataSize: bootstrap.blob(0).storedSize, base: `/v2/up/team/app/_skiff/layers/${layerDigest}/${params}` };
    },
  };
}


/** A multipart answer with its random boundary replaced, so that two of them compare. */
function sameBoundary<T extends Answer>(answer: T): T {
  const boundary = /boundary=(\S+)/.exec(answer.headers["content-type"] ?? "")?.[1];
  if (!boundary) return answer;
  const body = Buffer.from(answer.body.toString("latin1").replaceAll(boundary, "BOUNDARY"), "latin1");
  return { ...answer, body, headers: { ...answer.headers, "content-type": answer.headers["content-type"]!.replace(boundary, "BOUNDARY") } };
}

type Case = { label: string; target: string; fields?: Record<string, string>; method?: string; status: number; shortcut: boolean; entryFirst?: boolean };

/** Sends each case to the app alone and to the entry; both must answer and count alike. */
async function compare(t: Awaited<ReturnType<typeof setup>>, cases: Case[]): Promise<void> {
  for (const c of cases) {
    const m0 = counters(t.skiff.metrics.render());
    // What the first request changes (a conversion, a link) is the second's to find: `entryFirst`
    // shows that the shortcut leaves such work to the app.
    const first = c.entryFirst ? await t.viaEntry(c.target, c.fields, c.method) : await t.viaApp(c.target, c.fields, c.method);
    const m1 = counters(t.skiff.metrics.render());
    const second = c.entryFirst ? await t.viaApp(c.target, c.fields, c.method) : await t.viaEntry(c.target, c.fields, c.method);
    const m2 = counters(t.skiff.metrics.render());
    const app = sameBoundary(c.entryFirst ? second : first);
    const entry = sameBoundary((c.entryFirst ? first : second) as Answer & { shortcut: boolean });
    expect(app.status, `${c.label}: ${app.body.toString().slice(0, 300)}`).toBe(c.status);
    expect(entry.shortcut, `${c.label}: answered by the shortcut`).toBe(c.shortcut);
    expect(entry.status, c.label).toBe(app.status);
    for (const name of RELEVANT) expect(entry.headers[name], `${c.label}: ${name}`).toBe(app.headers[name]);
    expect(entry.headers, c.label).toEqual(app.headers);
    expect(entry.body.equals(app.body), `${c.label}: body`).toBe(true);
    // (The first of an `entryFirst` pair also counts the work it did.)
    if (!c.entryFirst) expect(delta(m1, m2), `${c.label}: counters`).toEqual(delta(m0, m1));
  }
}

describe("lazy routes through the shortcut", () => {
  it("answers data ranges and chunks as the app does, and leaves the rest to it (open access)", async () => {
    const t = await setup();
    const { base, chunks, dataSize, params } = await t.convert();
    const first = chunks[0]!;
    const last = chunks.at(-1)!;
    const chunkUrl = (c: typeof first, form = "none") => `${base}/chunks/${toHex(c.digest)}.${form}`;
    const unknown = `${base}/chunks/${"0".repeat(64)}.none`;
    const other = `/v2/up/team/copy/_skiff/layers/${t.layerDigest}/${params}`;
    const cases: Case[] = [
      { label: "data: first byte", target: `${base}/data`, fields: { Range: "bytes=0-0" }, status: 206, shortcut: true },
      { label: "data: 64 KiB", target: `${base}/data`, fields: { Range: "bytes=1000-66535" }, status: 206, shortcut: true },
      { label: "data: 1 MiB", target: `${base}/data`, fields: { Range: "bytes=5-1048580" }, status: 206, shortcut: true },
      { label: "data: suffix", target: `${base}/data`, fields: { Range: "bytes=-4096" }, status: 206, shortcut: true },
      { label: "data: open end", target: `${base}/data`, fields: { Range: `bytes=${dataSize - 10}-` }, status: 206, shortcut: true },
      { label: "data: end past the size", target: `${base}/data`, fields: { Range: `bytes=${dataSize - 10}-${dataSize + 100}` }, status: 206, shortcut: true },
      { label: "data: spaces", target: `${base}/data`, fields: { Range: " bytes = 7-8 " }, status: 206, shortcut: true },
      { label: "chunk: whole", target: chunkUrl(first), status: 200, shortcut: true },
      { label: "chunk: last, whole", target: chunkUrl(last), status: 200, shortcut: true },
      { label: "chunk: a range", target: chunkUrl(first), fields: { Range: "bytes=100-199" }, status: 206, shortcut: true },
      { label: "chunk: suffix", target: chunkUrl(last), fields: { Range: "bytes=-1" }, status: 206, shortcut: true },
      // Left to the app.
      { label: "data: no range (the whole layer)", target: `${base}/data`, status: 200, shortcut: false },
      { label: "data: more than 1 MiB", target: `${base}/data`, fields: { Range: "bytes=0-1048576" }, status: 206, shortcut: false },
      { label: "data: multi-range", target: `${base}/data`, fields: { Range: "bytes=0-1,5-6" }, status: 206, shortcut: false },
      { label: "data: unsatisfiable", target: `${base}/data`, fields: { Range: `bytes=${dataSize}-` }, status: 416, shortcut: false },
      { label: "data: malformed range", target: `${base}/data`, fields: { Range: "bytes=5-2" }, status: 200, shortcut: false },
      { label: "data: not bytes", target: `${base}/data`, fields: { Range: "items=0-1" }, status: 200, shortcut: false },
      { label: "data: If-None-Match", target: `${base}/data`, fields: { Range: "bytes=0-9", "If-None-Match": "*" }, status: 304, shortcut: false },
      { label: "data: If-Range, stale", target: `${base}/data`, fields: { Range: "bytes=0-9", "If-Range": '"sha256:nope"' }, status: 200, shortcut: false },
      { label: "data: HEAD", target: `${base}/data`, fields: { Range: "bytes=0-9" }, method: "HEAD", status: 200, shortcut: false },
      { label: "chunk: HEAD", target: chunkUrl(first), method: "HEAD", status: 200, shortcut: false },
      { label: "chunk: POST", target: chunkUrl(first), method: "POST", status: 405, shortcut: false },
      { label: "data: DELETE", target: `${base}/data`, method: "DELETE", status: 405, shortcut: false },
      { label: "data: PUT", target: `${base}/data`, method: "PUT", status: 405, shortcut: false },
      { label: "chunk: unknown digest", target: unknown, status: 404, shortcut: false },
      { label: "chunk: wrong form", target: chunkUrl(first, "deflate-raw"), status: 404, shortcut: false },
      { label: "chunk: unknown codec", target: chunkUrl(first, "zip"), status: 400, shortcut: false },
      { label: "chunk: bad name", target: `${base}/chunks/${toHex(first.digest).slice(2)}.none`, status: 400, shortcut: false },
      { label: "bad layer digest", target: `/v2/up/team/app/_skiff/layers/sha256:abc/${params}/data`, fields: { Range: "bytes=0-0" }, status: 400, shortcut: false },
      { label: "unknown params", target: `/v2/up/team/app/_skiff/layers/${t.layerDigest}/v9-c20-none/data`, fields: { Range: "bytes=0-0" }, status: 404, shortcut: false },
      { label: "params not converted (a conversion to run)", target: `/v2/up/team/app/_skiff/layers/${t.layerDigest}/v1-c16-none/data`, fields: { Range: "bytes=0-0" }, status: 206, shortcut: false, entryFirst: true },
      { label: "trailing slash", target: `${base}/data/`, fields: { Range: "bytes=0-0" }, status: 404, shortcut: false },
      { label: "a query", target: `${base}/data?x=1`, fields: { Range: "bytes=0-0" }, status: 206, shortcut: false },
      { label: "an escape", target: `${base.replace("team", "te%61m")}/data`, fields: { Range: "bytes=0-0" }, status: 206, shortcut: false },
      { label: "another repository with the layer (link to confirm upstream)", target: `${other}/data`, fields: { Range: "bytes=0-0" }, status: 206, shortcut: false, entryFirst: true },
      { label: "another repository, now linked", target: `${other}/data`, fields: { Range: "bytes=0-0" }, status: 206, shortcut: true },
      { label: "a repository not entitled to the layer", target: `/v2/up/team/none/_skiff/layers/${t.layerDigest}/${params}/data`, fields: { Range: "bytes=0-0" }, status: 404, shortcut: false },
      { label: "an upstream nobody configured", target: `/v2/nosuch/app/_skiff/layers/${t.layerDigest}/${params}/data`, fields: { Range: "bytes=0-0" }, status: 404, shortcut: false },
      { label: "the image bootstrap", target: "/v2/up/team/app/_skiff/bootstrap/v1", status: 200, shortcut: false },
      { label: "the layer bootstrap", target: `${base}/bootstrap`, status: 200, shortcut: false },
    ];
    await compare(t, cases);
  });

  it("serves a deflate layer's chunks in their stored form", async () => {
    const t = await setup(undefined, "deflate-raw");
    const { base, chunks } = await t.convert();
    const compressed = chunks.find((c) => c.compressed)!;
    expect(compressed).toBeDefined();
    const url = (form: string) => `${base}/chunks/${toHex(compressed.digest)}.${form}`;
    await compare(t, [
      { label: "compressed chunk", target: url("deflate-raw"), status: 200, shortcut: true },
      { label: "compressed chunk as none", target: url("none"), status: 404, shortcut: false },
      { label: "a range of it", target: url("deflate-raw"), fields: { Range: "bytes=3-30" }, status: 206, shortcut: true },
    ]);
  });

  it("leaves converted data that vanished from the store to the app, which answers 503", async () => {
    const t = await setup();
    const { base, params } = await t.convert();
    await compare(t, [{ label: "warm", target: `${base}/data`, fields: { Range: "bytes=0-9" }, status: 206, shortcut: true }]);
    const dataKey = layerDataKey(parseDigest(t.layerDigest)!, params);
    expect(await t.store.stat(dataKey)).not.toBeNull();
    await t.store.delete(dataKey);
    const entry = await t.viaEntry(`${base}/data`, { Range: "bytes=0-9" });
    expect(entry.shortcut).toBe(false);
    expect(entry.status).toBe(503);
  });

  it("makes the app's access decision in credentials mode: the same refusals, counted alike, and private answers", async () => {
    const users = [
      { username: "alice", password: "alice-pass", repositories: ["up/team/*"] },
      { username: "bob", password: "bob-pass", repositories: ["up/other/*"] },
    ];
    const t = await setup({ mode: "credentials", users, tokenSecret: TOKEN_SECRET, tokenTtl: 300 });
    const alice = { Authorization: basic("alice", "alice-pass") };
    const token = async (who: Record<string, string>) => `Bearer ${JSON.parse((await t.viaApp("/_skiff/token", who)).body.toString()).token}`;
    const { base, chunks } = await t.convert(alice);
    const chunk = `${base}/chunks/${toHex(chunks[0]!.digest)}.none`;
    const aliceToken = await token(alice);
    const bobToken = await token({ Authorization: basic("bob", "bob-pass") });
    const expiring = await token(alice);
    const range = { Range: "bytes=0-9" };
    const cases: Case[] = [];
    for (const [what, target, fields] of [
      ["data", `${base}/data`, range],
      ["chunk", chunk, {}],
    ] as const) {
      cases.push(
        { label: `${what}: Basic`, target, fields: { ...fields, ...alice }, status: what === "data" ? 206 : 200, shortcut: true },
        { label: `${what}: token`, target, fields: { ...fields, Authorization: aliceToken }, status: what === "data" ? 206 : 200, shortcut: true },
        { label: `${what}: no credentials`, target, fields, status: 401, shortcut: true },
        { label: `${what}: wrong password`, target, fields: { ...fields, Authorization: basic("alice", "nope") }, status: 401, shortcut: true },
        { label: `${what}: invalid token`, target, fields: { ...fields, Authorization: "Bearer not-a-token" }, status: 401, shortcut: true },
        { label: `${what}: malformed header`, target, fields: { ...fields, Authorization: "Basic !!!" }, status: 401, shortcut: true },
        { label: `${what}: token of a user of another repository`, target, fields: { ...fields, Authorization: bobToken }, status: 403, shortcut: true },
        { label: `${what}: HEAD, no credentials`, target, fields, method: "HEAD", status: 401, shortcut: false },
      );
    }
    await compare(t, cases);
    for (const c of cases.filter((c) => c.status < 300)) expect((await t.viaEntry(c.target, c.fields)).headers["cache-control"]).toMatch(/^private,/);

    // The same token after it has expired.
    t.advance(10 * 60_000);
    await compare(t, [
      { label: "data: expired token", target: `${base}/data`, fields: { ...range, Authorization: expiring }, status: 401, shortcut: true },
      { label: "chunk: expired token", target: chunk, fields: { Authorization: expiring }, status: 401, shortcut: true },
    ]);
  });
});
