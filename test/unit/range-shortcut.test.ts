// The Node entry's shortcut for single ranges of cached blobs (src/http/range-shortcut.ts) must answer
// exactly what the app answers, count exactly what the app counts, and leave everything else to
// the app without counting anything.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { resolveConfig } from "../../src/config/config.ts";
import { nodeHasher } from "../../src/hash/node.ts";
import { createApp } from "../../src/http/app.ts";
import { counters, delta, lower } from "./shortcut-compare.ts";
import { FsStore } from "../../src/store/fs.ts";
import { BufferPool } from "../../src/util/buffer-pool.ts";
import { bytesOf, FakeRegistry, nodeSkiffWithBlob, rawGet } from "./fakes.ts";

const TOKEN_SECRET = "0123456789abcdef0123456789abcdef";
const basic = (username: string, password: string) => `Basic ${Buffer.from(`${username}:${password}`).toString("base64")}`;

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function setup(access?: Record<string, unknown>) {
  const upstream = new FakeRegistry();
  const blob = bytesOf(3_000_000, 7);
  const digest = upstream.addBlob(["team/app"], blob);
  const dataDir = await mkdtemp(join(tmpdir(), "skiff-shortcut-"));
  cleanups.push(() => rm(dataDir, { recursive: true, force: true }));
  const config = resolveConfig({ upstreams: { up: { url: upstream.origin } }, ...(access ? { access } : {}) }, {});
  const store = await new FsStore(dataDir).init();
  const skiff = createApp({ config, fetchFor: () => upstream.fetch, store, hasher: nodeHasher });
  const path = `/v2/up/team/app/blobs/${digest}`;
  const headersOf = (fields: Record<string, string>) => new Headers(fields);
  const viaApp = async (target: string, fields: Record<string, string> = {}, method = "GET") => {
    const res = (await skiff.app.fetch(new Request(`http://skiff.test${target}`, { method, headers: fields }))) as Response;
    return { status: res.status, headers: Object.fromEntries(res.headers), body: new Uint8Array(await res.arrayBuffer()) };
  };
  const viaShortcut = async (target: string, fields: Record<string, string> = {}, method = "GET") => {
    const h = headersOf(fields);
    const answer = await skiff.shortcut({ method, target, url: `http://skiff.test${target}`, headers: h });
    if (!answer) return undefined;
    answer.written?.();
    return { status: answer.status, headers: lower(answer.headers), body: answer.body ?? new Uint8Array() };
  };
  return { skiff, store, blob, digest, path, viaApp, viaShortcut };
}


describe("range shortcut", () => {
  it("answers single ranges of a cached blob as the app does: status, headers, body and counters", async () => {
    const t = await setup();
    // Cached and entitled through the app first; the shortcut only answers from memory.
    expect((await t.viaShortcut(t.path, { Range: "bytes=0-9" }))).toBeUndefined();
    expect((await t.viaApp(t.path)).status).toBe(200);
    expect((await t.viaApp(t.path, { Range: "bytes=0-0" })).status).toBe(206);

    const size = t.blob.byteLength;
    for (const range of ["bytes=0-0", "bytes=100-65635", `bytes=${size - 10}-`, "bytes=-4096", `bytes=2999000-${size + 5000}`, "bytes=0-1048575", " bytes = 7-8 "]) {
      const m0 = counters(t.skiff.metrics.render());
      const app = await t.viaApp(t.path, { Range: range });
      const m1 = counters(t.skiff.metrics.render());
      const fast = await t.viaShortcut(t.path, { Range: range });
      const m2 = counters(t.skiff.metrics.render());
      expect(fast, range).toBeDefined();
      expect(fast!.status).toBe(206);
      expect(fast!.headers).toEqual(app.headers);
      expect(Buffer.from(fast!.body).equals(Buffer.from(app.body)), range).toBe(true);
      expect(delta(m1, m2)).toEqual(delta(m0, m1));
    }
  });

  it("leaves to the app, counting nothing, what it does not answer itself", async () => {
    const t = await setup();
    await t.viaApp(t.path);
    await t.viaApp(t.path, { Range: "bytes=0-0" });
    const before = t.skiff.metrics.render();
    const declined: [string, Record<string, string>, string?][] = [
      [t.path, {}], // no range
      [t.path, { Range: "bytes=0-1,5-6" }],
      [t.path, { Range: "bytes=0-1", "If-Range": `"${t.digest}"` }],
      [t.path, { Range: "bytes=0-1", "If-None-Match": `"${t.digest}"` }],
      [t.path, { Range: "bytes=0-1" }, "HEAD"],
      [`${t.path}?ns=up`, { Range: "bytes=0-1" }],
      [t.path.replace("team", "te%61m"), { Range: "bytes=0-1" }],
      [t.path, { Range: "bytes=5-2" }],
      [t.path, { Range: `bytes=${t.blob.byteLength}-` }], // 416 is the app's
      [t.path, { Range: "bytes=0-1048576" }], // more than one buffer's worth
      [t.path.replace("team/app", "team/other"), { Range: "bytes=0-1" }], // not entitled in memory
      [`/v2/up/team/app/manifests/${t.digest}`, { Range: "bytes=0-1" }],
      [`/v2/up/team/app/_skiff/layers/${t.digest}/default/data`, { Range: "bytes=0-1" }],
      ["/v2/nosuchupstream/app/blobs/" + t.digest, { Range: "bytes=0-1" }],
    ];
    for (const [target, fields, method] of declined) expect(await t.viaShortcut(target, fields, method), `${method ?? "GET"} ${target} ${JSON.stringify(fields)}`).toBeUndefined();
    expect(t.skiff.metrics.render()).toBe(before);
  });

  it("leaves a blob that vanished from the store to the app", async () => {
    const t = await setup();
    await t.viaApp(t.path);
    await t.viaApp(t.path, { Range: "bytes=0-0" });
    await t.store.delete(`blobs/sha256/${t.digest.slice(7, 9)}/${t.digest.slice(7)}`);
    expect(await t.viaShortcut(t.path, { Range: "bytes=0-9" })).toBeUndefined();
    // The app fetches it again from the upstream.
    expect((await t.viaApp(t.path, { Range: "bytes=0-9" })).status).toBe(206);
  });

  it("makes the app's access decision: the same refusal, counted once, and private answers for users", async () => {
    const t = await setup({ mode: "credentials", users: [{ username: "alice", password: "alice-pass", repositories: ["up/team/*"] }], tokenSecret: TOKEN_SECRET });
    const alice = { Authorization: basic("alice", "alice-pass") };
    await t.viaApp(t.path, alice);
    await t.viaApp(t.path, { ...alice, Range: "bytes=0-0" });

    const refused: Record<string, string>[] = [{}, { Authorization: basic("alice", "wrong") }, { Authorization: "Bearer not-a-token" }];
    for (const fields of refused) {
      const m0 = counters(t.skiff.metrics.render());
      const app = await t.viaApp(t.path, { ...fields, Range: "bytes=0-9" });
      const m1 = counters(t.skiff.metrics.render());
      const fast = await t.viaShortcut(t.path, { ...fields, Range: "bytes=0-9" });
      const m2 = counters(t.skiff.metrics.render());
      expect(app.status).toBe(401);
      expect(fast).toEqual(app);
      expect(delta(m1, m2)).toEqual(delta(m0, m1));
    }

    const fast = await t.viaShortcut(t.path, { ...alice, Range: "bytes=0-9" });
    expect(fast?.status).toBe(206);
    expect(fast?.headers["cache-control"]).toMatch(/^private,/);
    expect(fast?.headers).toEqual((await t.viaApp(t.path, { ...alice, Range: "bytes=0-9" })).headers);
  });
});

describe("the Node entry with the shortcut", () => {
  /** A raw HTTP/1.1 exchange, so that repeated fields reach the server as sent. */
  it("writes the shortcut's answers on the wire as the app's, and leaves a repeated Authorization to the app", async () => {
    const blob = bytesOf(200_000, 9);
    const access = { mode: "credentials", users: [{ username: "alice", password: "alice-pass", repositories: ["up/*"] }], tokenSecret: TOKEN_SECRET };
    const { server: skiff, url, close } = await nodeSkiffWithBlob(blob, access);
    cleanups.push(close);
    const alice = basic("alice", "alice-pass");

    const whole = await rawGet(url, ["Authorization", alice]);
    expect(whole.status, whole.body.toString().slice(0, 300)).toBe(200);
    expect(whole.body.equals(Buffer.from(blob))).toBe(true);
    const hits = () => skiff.metrics.get("skiff_cache_hits_total", { kind: "blob" });
    const first = await rawGet(url, ["Authorization", alice, "Range", "bytes=10-20009"]); // through the app: entitles
    const second = await rawGet(url, ["Authorization", alice, "Range", "bytes=10-20009"]); // through the shortcut
    expect(hits()).toBe(2);
    expect(second.status).toBe(206);
    expect(second.body.equals(Buffer.from(blob.subarray(10, 20010)))).toBe(true);
    const { date: _d1, ...firstHeaders } = first.headers;
    const { date: _d2, ...secondHeaders } = second.headers;
    expect(secondHeaders).toEqual(firstHeaders);

    // Node keeps only the first of repeated Authorization fields, web Headers join them: the app
    // (which reads them joined, as every other route does) refuses the pair.
    const repeated = await rawGet(url, ["Authorization", alice, "Authorization", basic("mallory", "x"), "Range", "bytes=0-9"]);
    expect(repeated.status).toBe(401);
  });
});

describe("BufferPool", () => {
  it("hands out power-of-two buffers, reuses given-back ones and keeps no more than its cap", () => {
    const pool = new BufferPool({ maxBytesPerSize: 2 * 65536 });
    const a = pool.take(40_000);
    expect(a.byteLength).toBe(65536);
    expect(pool.take(1).byteLength).toBe(4096);
    pool.give(a);
    expect(pool.take(65536)).toBe(a);
    const [b, c, d] = [pool.take(65536), pool.take(65536), pool.take(65536)];
    for (const x of [b, c, d]) pool.give(x);
    const again = [pool.take(65536), pool.take(65536), pool.take(65536)];
    expect(again.filter((x) => x === b || x === c || x === d)).toHaveLength(2);
  });
});
