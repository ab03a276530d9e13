// The Node entry's shortcut on the lazy API's data and chunk routes, on the wire, in front of a real
// Distribution registry behind token auth (the test's token issuer). One skiff app, in `passthrough`
// mode (clients pull with their own credentials of that registry, which skiff checks there) or in
// `credentials` mode (skiff's users and tokens; skiff's own credentials upstream), is
// served by two node:http listeners: the Node entry's (the shortcut first) and the app's alone
// (@hono/node-server, the shortcut bypassed). Every request of a table goes to both; the answers
// must agree in status, headers and body, and the shortcut must have answered those it is for.
import { createServer, request as httpRequest, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { getRequestListener } from "@hono/node-server";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { resolveConfig } from "../../src/config/config.ts";
import { Bootstrap } from "../../src/format/decode.ts";
import { toHex } from "../../src/hash/hasher.ts";
import { nodeHasher } from "../../src/hash/node.ts";
import { createApp, type SkiffApp } from "../../src/http/app.ts";
import { nodeListener } from "../../src/runtime/node-shortcut.ts";
import { FsStore } from "../../src/store/fs.ts";
import { OciLayout, buildImage, pushImage, type ImageInfo } from "./harness/images.ts";
import { Registry } from "./harness/registry.ts";
import { teardown } from "./harness/teardown.ts";
import { TokenIssuer } from "./harness/token-issuer.ts";
import { tempDir } from "./harness/workdir.ts";

const SERVICE = "skiff-e2e-lazy-shortcut";
const ISSUER = "skiff-e2e-lazy-shortcut-issuer";
const MIRROR = { user: "skiff-mirror", password: "mirror-secret-0c5e7a12" };
const ALICE = { user: "alice", password: "alice-secret-9d31b6f0" }; // every repository
const BOB = { user: "bob", password: "bob-secret-27e4c8a5" }; // team-b/* only (the issuer's ACL)
const REPO = "team-a/app";
/** Headers Node's server sets by itself, per connection or per answer. */
const TRANSPORT = ["date", "connection", "keep-alive"];

let issuer: TokenIssuer;
let registry: Registry;
let image: ImageInfo;
const servers: Server[] = [];

/** One skiff app behind two listeners: the Node entry's (`entry`) and the app's alone (`appOnly`). */
interface Pair {
  entry: Server;
  appOnly: Server;
  /** Whether the shortcut answered each request the entry got, in order. */
  answered: boolean[];
  /** Moves the app's clock forward (token expiry). */
  advance(ms: number): void;
}

const basic = (l: { user: string; password: string }) => `Basic ${Buffer.from(`${l.user}:${l.password}`).toString("base64")}`;
const base = (server: Server) => `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

interface Got {
  status: number;
  headers: Record<string, string>;
  body: Buffer;
}

/** One request on its own connection, the headers as sent (node:http, no client-side rewriting). */
function send(server: Server, method: string, path: string, headers: Record<string, string>): Promise<Got> {
  return new Promise((resolve, reject) => {
    // One Host for both listeners: a challenge's realm is made from it.
    const req = httpRequest(`${base(server)}${path}`, { method, headers: { Host: "skiff.test", ...headers }, agent: false }, (res) => {
      const parts: Buffer[] = [];
      res.on("data", (d: Buffer) => parts.push(d));
      res.on("end", () => {
        const out: Record<string, string> = {};
        for (const [name, value] of Object.entries(res.headers)) if (!TRANSPORT.includes(name) && value !== undefined) out[name] = Array.isArray(value) ? value.join(", ") : value;
        resolve(sameBoundary({ status: res.statusCode ?? 0, headers: out, body: Buffer.concat(parts) }));
      });
      res.on("error", reject);
    });
    req.on("error", reject);
    req.setTimeout(60_000, () => req.destroy(new Error(`${method} ${path}: no answer within 60 s`)));
    req.end();
  });
}

/** A multipart answer with its random boundary replaced, so that two of them compare. */
function sameBoundary(got: Got): Got {
  const boundary = /boundary=(\S+)/.exec(got.headers["content-type"] ?? "")?.[1];
  if (!boundary) return got;
  const body = Buffer.from(got.body.toString("latin1").replaceAll(boundary, "BOUNDARY"), "latin1");
  return { ...got, body, headers: { ...got.headers, "content-type": got.headers["content-type"]!.replace(boundary, "BOUNDARY") } };
}

const listen = (server: Server) => new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));

beforeAll(async () => {
  issuer = await TokenIssuer.start({ users: { [MIRROR.user]: MIRROR.password, [ALICE.user]: ALICE.password, [BOB.user]: BOB.password }, service: SERVICE, issuer: ISSUER, acl: { [BOB.user]: ["team-b/*"] } });
  registry = await Registry.start({ name: "lazy-shortcut-registry", auth: { token: { realm: issuer.realm, service: SERVICE, issuer: ISSUER, rootCertBundle: issuer.certPath } } });
  const layout = new OciLayout(tempDir("lazy-shortcut-layout"));
  image = buildImage(layout, { tag: "v1", seed: "lazy-shortcut", layers: 1, filesPerLayer: 4, fileSize: 700 * 1024 });
  await pushImage(layout, "v1", `${registry.hostPort}/${REPO}:v1`, { creds: `${MIRROR.user}:${MIRROR.password}` });
  // A repository alice may pull that does not hold the layer.
  buildImage(layout, { tag: "other", seed: "lazy-shortcut-other", layers: 1, filesPerLayer: 1 });
  await pushImage(layout, "other", `${registry.hostPort}/team-a/other:v1`, { creds: `${MIRROR.user}:${MIRROR.password}` });

});

const MIRROR_UPSTREAM = () => ({ priv: { url: registry.url, credentials: { username: MIRROR.user, password: MIRROR.password }, allowHosts: [issuer.hostPort] } });

async function servePair(access: object): Promise<Pair> {
  const config = resolveConfig({ upstreams: MIRROR_UPSTREAM(), access }, {});
  let clock = Date.now();
  const skiff = createApp({ config, store: await new FsStore(tempDir("lazy-shortcut-store")).init(), hasher: nodeHasher, convertWaitSeconds: 60, noneFirst: false, now: () => clock });
  const answered: boolean[] = [];
  const watched: SkiffApp = {
    ...skiff,
    shortcut: async (request) => {
      const answer = await skiff.shortcut(request);
      answered.push(answer !== undefined);
      return answer;
    },
  };
  const entry = createServer(nodeListener(watched));
  const appOnly = createServer(getRequestListener(skiff.app.fetch));
  servers.push(entry, appOnly);
  await Promise.all([listen(entry), listen(appOnly)]);
  return { entry, appOnly, answered, advance: (ms) => void (clock += ms) };
}

/** The image converted through the app as `auth`, and the URLs of its layer's data and chunks. */
async function converted(pair: Pair, auth: Record<string, string>) {
  const res = await send(pair.appOnly, "GET", `/v2/priv/${REPO}/_skiff/bootstrap/v1`, auth);
  expect(res.status, res.body.toString().slice(0, 300)).toBe(200);
  const bootstrap = Bootstrap.decode(new Uint8Array(res.body));
  const layer = bootstrap.blob(0).layerDigest;
  expect(layer).toBe(image.layers[0]!.digest);
  const params = res.headers["skiff-params"]!;
  const lazy = `/v2/priv/${REPO}/_skiff/layers/${layer}/${params}`;
  const chunks = Array.from({ length: bootstrap.chunkCount }, (_, i) => bootstrap.chunk(i));
  // The first data read (through the app too) makes the entitlement known.
  expect((await send(pair.appOnly, "GET", `${lazy}/data`, { ...auth, Range: "bytes=0-0" })).status).toBe(206);
  return { layer, params, lazy, size: bootstrap.blob(0).storedSize, chunks, chunk: `${lazy}/chunks/${toHex(chunks[0]!.digest)}.none`, last: `${lazy}/chunks/${toHex(chunks.at(-1)!.digest)}.none` };
}

/** Each case to the app alone, then to the entry: the same answer, and the shortcut answered what it is for. */
async function compare(pair: Pair, cases: Case[]): Promise<void> {
  for (const c of cases) {
    const method = c.method ?? "GET";
    const viaApp = await send(pair.appOnly, method, c.path, c.headers ?? {});
    const before = pair.answered.length;
    const viaEntry = await send(pair.entry, method, c.path, c.headers ?? {});
    expect(viaApp.status, `${c.label}: ${viaApp.body.toString().slice(0, 300)}`).toBe(c.status);
    expect(pair.answered.slice(before), c.label).toEqual([c.shortcut]);
    expect(viaEntry.status, c.label).toBe(viaApp.status);
    for (const name of ["content-range", "content-length", "etag", "cache-control", "docker-content-digest", "www-authenticate"]) expect(viaEntry.headers[name], `${c.label}: ${name}`).toBe(viaApp.headers[name]);
    expect(viaEntry.headers, c.label).toEqual(viaApp.headers);
    expect(viaEntry.body.equals(viaApp.body), `${c.label}: body`).toBe(true);
  }
}

afterAll(async () => {
  for (const s of servers) await new Promise((r) => s.close(r));
  await registry?.stop();
  await issuer?.stop();
  await teardown();
});

interface Case {
  label: string;
  path: string;
  headers?: Record<string, string>;
  method?: string;
  status: number;
  /** Whether the entry's shortcut answers it (else the app behind it does). */
  shortcut: boolean;
}

describe("lazy data and chunk routes: the Node entry's shortcut and the app alone answer alike", () => {
  test("passthrough to a registry with token auth: grants, refusals and everything left to the app", async () => {
    const pair = await servePair({ mode: "passthrough" });
    const alice = { Authorization: basic(ALICE) };
    const { layer, params, lazy, size, chunks, chunk, last } = await converted(pair, alice);
    const r = (range: string) => ({ ...alice, Range: range });
    const cases: Case[] = [
      { label: "data: 64 KiB", path: `${lazy}/data`, headers: r("bytes=65536-131071"), status: 206, shortcut: true },
      { label: "data: 1 MiB", path: `${lazy}/data`, headers: r("bytes=1-1048576"), status: 206, shortcut: true },
      { label: "data: suffix", path: `${lazy}/data`, headers: r("bytes=-100"), status: 206, shortcut: true },
      { label: "data: past the end", path: `${lazy}/data`, headers: r(`bytes=${size - 5}-${size + 5}`), status: 206, shortcut: true },
      { label: "chunk: whole", path: chunk, headers: alice, status: 200, shortcut: true },
      { label: "chunk: last, whole", path: last, headers: alice, status: 200, shortcut: true },
      { label: "chunk: a range", path: chunk, headers: r("bytes=10-20"), status: 206, shortcut: true },
      // The access decision's refusals, answered by the shortcut as by the app.
      { label: "data: no credentials", path: `${lazy}/data`, headers: { Range: "bytes=0-9" }, status: 401, shortcut: true },
      { label: "chunk: no credentials", path: chunk, status: 401, shortcut: true },
      { label: "data: anonymous Basic", path: `${lazy}/data`, headers: { Range: "bytes=0-9", Authorization: basic({ user: "", password: "" }) }, status: 401, shortcut: true },
      { label: "data: wrong password", path: `${lazy}/data`, headers: { Range: "bytes=0-9", Authorization: basic({ user: ALICE.user, password: "wrong" }) }, status: 403, shortcut: true },
      { label: "chunk: unknown user", path: chunk, headers: { Authorization: basic({ user: "mallory", password: "x" }) }, status: 403, shortcut: true },
      { label: "data: a user the registry keeps out of the repository", path: `${lazy}/data`, headers: { Range: "bytes=0-9", Authorization: basic(BOB) }, status: 403, shortcut: true },
      { label: "chunk: a user the registry keeps out of the repository", path: chunk, headers: { Authorization: basic(BOB) }, status: 403, shortcut: true },
      { label: "data: a bearer token (passthrough wants Basic)", path: `${lazy}/data`, headers: { Range: "bytes=0-9", Authorization: "Bearer abc" }, status: 401, shortcut: true },
      { label: "data: malformed Authorization", path: `${lazy}/data`, headers: { Range: "bytes=0-9", Authorization: "Basic ###" }, status: 401, shortcut: true },
      // Left to the app.
      { label: "data: whole", path: `${lazy}/data`, headers: alice, status: 200, shortcut: false },
      { label: "data: multi-range", path: `${lazy}/data`, headers: r("bytes=0-9,20-29"), status: 206, shortcut: false },
      { label: "data: unsatisfiable", path: `${lazy}/data`, headers: r(`bytes=${size}-`), status: 416, shortcut: false },
      { label: "data: malformed range", path: `${lazy}/data`, headers: r("bytes=x-y"), status: 200, shortcut: false },
      { label: "data: If-None-Match", path: `${lazy}/data`, headers: { ...r("bytes=0-9"), "If-None-Match": `"sha256:${"0".repeat(64)}"` }, status: 206, shortcut: false },
      { label: "chunk: If-None-Match, matching", path: chunk, headers: { ...alice, "If-None-Match": `"${toHex(chunks[0]!.digest)}.none"` }, status: 304, shortcut: false },
      { label: "data: HEAD", path: `${lazy}/data`, headers: alice, method: "HEAD", status: 200, shortcut: false },
      { label: "chunk: HEAD, no credentials", path: chunk, method: "HEAD", status: 401, shortcut: false },
      { label: "chunk: DELETE", path: chunk, headers: alice, method: "DELETE", status: 405, shortcut: false },
      { label: "chunk: unknown digest", path: `${lazy}/chunks/${"ab".repeat(32)}.none`, headers: alice, status: 404, shortcut: false },
      { label: "chunk: unknown digest, no credentials", path: `${lazy}/chunks/${"ab".repeat(32)}.none`, status: 401, shortcut: true },
      { label: "data: bad layer digest", path: `/v2/priv/${REPO}/_skiff/layers/sha256:12/${params}/data`, headers: r("bytes=0-9"), status: 400, shortcut: false },
      { label: "data: bad params", path: `/v2/priv/${REPO}/_skiff/layers/${layer}/v1-c99-none/data`, headers: r("bytes=0-9"), status: 404, shortcut: false },
      { label: "data: a repository without the layer", path: `/v2/priv/team-a/other/_skiff/layers/${layer}/${params}/data`, headers: r("bytes=0-9"), status: 404, shortcut: false },
      { label: "data: a repository the registry does not have", path: `/v2/priv/team-a/nothing/_skiff/layers/${layer}/${params}/data`, headers: r("bytes=0-9"), status: 403, shortcut: true },
    ];
    await compare(pair, cases);
  });

  test("credentials mode (skiff's users and tokens) over the same upstream: tokens, expired tokens, other repositories", async () => {
    const users = [
      { username: "ci-a", password: "ci-a-secret-41d7", repositories: ["priv/team-a/*"] },
      { username: "ci-b", password: "ci-b-secret-8e02", repositories: ["priv/team-b/*"] },
    ];
    const pair = await servePair({ mode: "credentials", users, tokens: [{ token: "static-token-a-5c9e61", repositories: ["priv/team-a/*"] }], tokenSecret: "0123456789abcdef0123456789abcdef", tokenTtl: 300 });
    const ciA = { Authorization: basic({ user: "ci-a", password: "ci-a-secret-41d7" }) };
    const tokenOf = async (auth: Record<string, string>) => `Bearer ${JSON.parse((await send(pair.appOnly, "GET", "/_skiff/token", auth)).body.toString()).token}`;
    const { lazy, chunk } = await converted(pair, ciA);
    const tokenA = await tokenOf(ciA);
    const tokenB = await tokenOf({ Authorization: basic({ user: "ci-b", password: "ci-b-secret-8e02" }) });
    const cases: Case[] = [];
    for (const [what, path, extra, ok] of [
      ["data", `${lazy}/data`, { Range: "bytes=100-65635" }, 206],
      ["chunk", chunk, {}, 200],
    ] as const) {
      cases.push(
        { label: `${what}: Basic`, path, headers: { ...extra, ...ciA }, status: ok, shortcut: true },
        { label: `${what}: token`, path, headers: { ...extra, Authorization: tokenA }, status: ok, shortcut: true },
        { label: `${what}: static token`, path, headers: { ...extra, Authorization: "Bearer static-token-a-5c9e61" }, status: ok, shortcut: true },
        { label: `${what}: no credentials`, path, headers: extra, status: 401, shortcut: true },
        { label: `${what}: invalid token`, path, headers: { ...extra, Authorization: "Bearer nope" }, status: 401, shortcut: true },
        { label: `${what}: token for another repository`, path, headers: { ...extra, Authorization: tokenB }, status: 403, shortcut: true },
        { label: `${what}: HEAD, token for another repository`, path, headers: { ...extra, Authorization: tokenB }, method: "HEAD", status: 403, shortcut: false },
      );
    }
    await compare(pair, cases);
    pair.advance(10 * 60_000);
    await compare(pair, [
      { label: "data: expired token", path: `${lazy}/data`, headers: { Range: "bytes=0-9", Authorization: tokenA }, status: 401, shortcut: true },
      { label: "chunk: expired token", path: chunk, headers: { Authorization: tokenA }, status: 401, shortcut: true },
      { label: "chunk: Basic, after", path: chunk, headers: ciA, status: 200, shortcut: true },
    ]);
  });
});
