// Several upstreams behind one skiff, and who may pull what (docs/configuration.md). A public
// registry (`pub`) and a private one behind token auth (`priv`, with team-a's and team-b's
// repositories; skiff holds an admin credential) are pulled by prefix with skopeo and through
// containerd's mirror query; only configured registries are ever contacted (a canary listener on
// 127.0.0.2 counts connections); in `credentials` and in `passthrough` mode nothing skiff has cached
// from the private registry reaches a client the mode does not let in, by any route or any name;
// no credential shows up in skiff's log or metrics; and `open` mode refuses a private upstream.
import { spawnSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { createServer as createHttpServer, type Server as HttpServer } from "node:http";
import { connect, createServer as createNetServer, type Server as NetServer } from "node:net";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { Bootstrap } from "../../src/format/decode.ts";
import { toHex } from "../../src/hash/hasher.ts";
import { Containerd, writeMirrorHostsToml } from "./harness/containerd.ts";
import { compareTrees, listAllPaths } from "./harness/files.ts";
import { transfer } from "./harness/http.ts";
import { MT, OciLayout, buildImage, pushImage, type ImageInfo } from "./harness/images.ts";
import { childEnv } from "./harness/processes.ts";
import { Registry } from "./harness/registry.ts";
import { parseMetrics, REPO_ROOT, SKIFF_BIN, Skiff } from "./harness/skiff.ts";
import { skopeoCopy, skopeoCopyResult } from "./harness/skopeo.ts";
import { teardown } from "./harness/teardown.ts";
import { TokenIssuer } from "./harness/token-issuer.ts";
import { tempDir } from "./harness/workdir.ts";

const SERVICE = "skiff-e2e-priv";
const ISSUER = "skiff-e2e-priv-issuer";
/** An extra registry name for `priv` in containerd's `?ns=` (its `namespaces`). */
const PRIV_ALIAS = "registry.priv.example";
const ACCEPT = { Accept: `${MT.manifest}, ${MT.index}` };

interface Login {
  user: string;
  password: string;
}
// Accounts at the private registry's token issuer.
const MIRROR: Login = { user: "skiff-mirror", password: "mirror-secret-5f0c2e81" }; // skiff's own, fills its cache
const ALICE: Login = { user: "alice", password: "alice-secret-b7d4a903" }; // all of priv
const BOB: Login = { user: "bob", password: "bob-secret-1e9f6c27" }; // team-b/app only (the issuer's ACL)
// Accounts at skiff itself (credentials mode).
const CI_A: Login = { user: "ci-a", password: "ci-a-secret-84a2d5f6" }; // pub/*, priv/team-a/*, the hostile upstreams
const CI_B: Login = { user: "ci-b", password: "ci-b-secret-3c7e0b19" }; // priv/team-b/*
const AGENT_B_TOKEN = "agent-b-static-token-6d2f8a41c0e5"; // static bearer token, priv/team-b/*
const WRONG = "wrong-secret-0a9b8c7d";
const ENV = { SKIFF_E2E_CI_B_PASSWORD: CI_B.password, SKIFF_E2E_MIRROR_PASSWORD: MIRROR.password };

type ModeName = "credentials" | "passthrough";

let canary: NetServer;
let canaryPort = 0;
let canaryConnections = 0;
let hostile: HttpServer;
let hostileUrl = "";
let hostileRequests = 0;
let issuer: TokenIssuer;
let pub: Registry;
let priv: Registry;
/** A Distribution registry whose token realm is the canary. */
let trap: Registry;
let layout: OciLayout;
let pubImage: ImageInfo;
let teamA: ImageInfo;
let teamB: ImageInfo;
let mirrorPasswordFile = "";
let agentTokenFile = "";
/** Tokens skiff issued to clients in these tests (they must not show up in its log either). */
const skiffTokens: string[] = [];
const skiffs = new Map<ModeName, Promise<Skiff>>();

// ---- helpers ------------------------------------------------------------------------------------

interface Got {
  status: number;
  headers: Headers;
  body: Buffer;
}

async function request(url: string, headers: Record<string, string> = {}, method = "GET"): Promise<Got> {
  const r = await transfer(url, { method, headers, redirect: "manual" });
  return { status: r.status, headers: r.headers, body: r.body };
}

const b64 = (s: string) => Buffer.from(s, "utf8").toString("base64");
const basic = (l: Login) => ({ Authorization: `Basic ${b64(`${l.user}:${l.password}`)}` });
const bearer = (token: string) => ({ Authorization: `Bearer ${token}` });

/** The first OCI error code of an answer (undefined when the body is not an OCI error). */
function ociCode(r: Got): string | undefined {
  try {
    return (JSON.parse(r.body.toString("utf8")) as { errors?: { code: string }[] }).errors?.[0]?.code;
  } catch {
    return undefined;
  }
}

/** A `WWW-Authenticate` header: scheme (lower case) and its quoted parameters. */
function parseChallenge(header: string | null): { scheme: string; params: Record<string, string> } {
  const m = /^(\w+)\s*(.*)$/.exec(header ?? "");
  if (m === null) return { scheme: "", params: {} };
  const params: Record<string, string> = {};
  for (const p of m[2]!.matchAll(/(\w+)="([^"]*)"/g)) params[p[1]!.toLowerCase()] = p[2]!;
  return { scheme: m[1]!.toLowerCase(), params };
}

/** skiff with this file's config in `mode`, started once (own data dir) and shared by the describes. */
function skiffFor(mode: ModeName): Promise<Skiff> {
  let s = skiffs.get(mode);
  if (s === undefined) {
    s = Skiff.start({ config: configFor(mode), env: ENV });
    skiffs.set(mode, s);
  }
  return s;
}

/** Four upstreams: pub, priv, and two that point at the canary (a redirect, a token realm). */
function configFor(mode: ModeName): object {
  const mirrorCredentials =
    mode === "credentials"
      ? { username: MIRROR.user, passwordFile: mirrorPasswordFile }
      : { username: MIRROR.user, passwordEnv: "SKIFF_E2E_MIRROR_PASSWORD" };
  const upstreams = {
    pub: { url: pub.url, public: true },
    priv: { url: priv.url, credentials: mirrorCredentials, allowHosts: [issuer.hostPort], namespaces: [PRIV_ALIAS] },
    hostile: { url: hostileUrl },
    trap: { url: trap.url, credentials: { username: MIRROR.user, password: MIRROR.password } },
  };
  const access =
    mode === "credentials"
      ? {
          mode,
          users: [
            { username: CI_A.user, password: CI_A.password, repositories: ["pub/*", "priv/team-a/*", "hostile/*", "trap/*"] },
            { username: CI_B.user, passwordEnv: "SKIFF_E2E_CI_B_PASSWORD", repositories: ["priv/team-b/*"] },
          ],
          tokens: [{ name: "agent-b", tokenFile: agentTokenFile, repositories: ["priv/team-b/*"] }],
        }
      : { mode, decisionTtl: 60 };
  return { upstreams, defaultUpstream: "pub", access };
}

/** `ctr image pull` through a hosts directory, optionally with `--user`. */
function ctrPull(c: Containerd, ref: string, hostsDir: string, user?: Login) {
  const args = ["image", "pull", "--snapshotter", c.snapshotter, "--plain-http", "--hosts-dir", hostsDir];
  if (user !== undefined) args.push("--user", `${user.user}:${user.password}`);
  args.push(ref);
  return c.ctr(args, { timeoutMs: 180_000 });
}

/** Registry access-log lines since `from` that did not come from skiff (containerd falling back). */
async function directRequests(r: Registry, from: number): Promise<string[]> {
  await r.settledRequestCount();
  return r
    .accessLog()
    .slice(from)
    .filter((l) => !l.userAgent.startsWith("skiff"))
    .map((l) => `${l.method} ${l.path} ${l.userAgent}`);
}

/** skopeo through skiff and directly from the registry: the two copies must be byte-identical. */
async function expectSameCopy(via: string, viaCreds: string | undefined, direct: string, directCreds: string | undefined, image: ImageInfo) {
  const a = tempDir("ac-direct");
  const b = tempDir("ac-via");
  await skopeoCopy(`docker://${direct}`, `dir:${a}`, { srcCreds: directCreds });
  await skopeoCopy(`docker://${via}`, `dir:${b}`, { srcCreds: viaCreds });
  const diff = compareTrees(a, b);
  expect(diff.onlyInA).toEqual([]);
  expect(diff.onlyInB).toEqual([]);
  expect(diff.different).toEqual([]);
  expect(diff.same.length).toBe(image.layers.length + 3); // manifest.json, version, config, layers
}

/** Follow skiff's 401 challenge for `path` like a registry client: the token endpoint, then the token. */
async function skiffLogin(s: Skiff, path: string, l: Login, method: "GET" | "POST" = "GET"): Promise<string> {
  const first = await request(`${s.url}${path}`, ACCEPT);
  expect(first.status).toBe(401);
  const c = parseChallenge(first.headers.get("www-authenticate"));
  expect(c.scheme).toBe("bearer");
  const realm = new URL(c.params.realm ?? "");
  expect(realm.origin, "the token realm is skiff itself").toBe(s.url);
  let res: Got;
  if (method === "GET") {
    realm.searchParams.set("service", c.params.service ?? "");
    if (c.params.scope !== undefined) realm.searchParams.set("scope", c.params.scope);
    res = await request(realm.href, basic(l));
  } else {
    const form = new URLSearchParams({ grant_type: "password", username: l.user, password: l.password, service: c.params.service ?? "", client_id: "skiff-e2e" });
    if (c.params.scope !== undefined) form.set("scope", c.params.scope);
    const r = await transfer(realm.href, { method: "POST", body: form.toString(), headers: { "Content-Type": "application/x-www-form-urlencoded" } });
    res = { status: r.status, headers: r.headers, body: r.body };
  }
  expect(res.status, res.body.toString("utf8").slice(0, 300)).toBe(200);
  const body = JSON.parse(res.body.toString("utf8")) as { token?: string; access_token?: string; expires_in?: number };
  expect(typeof body.token).toBe("string");
  expect(body.access_token ?? body.token).toBe(body.token);
  expect(body.expires_in).toBeGreaterThan(0);
  skiffTokens.push(body.token!);
  return body.token!;
}

/** One request for a private object, as the authorised client made it; `secret` is what it got. */
interface Probe {
  label: string;
  path: string;
  method: "GET" | "HEAD";
  headers: Record<string, string>;
  secret: Buffer | undefined;
}

/** Where team-a's converted layer lives in the lazy API. */
interface LazyRefs {
  layer: string;
  params: string;
  chunk: string;
  range: string;
}

/**
 * As an authorised client, fetch (and so make skiff cache) team-a's manifest by tag and digest, its
 * config and a layer blob, its tag list, its bootstrap by tag and digest, a data-blob range and a
 * chunk. Returns the requests, to be repeated by clients that must not get them.
 */
async function fetchTeamA(s: Skiff, auth: Record<string, string>): Promise<{ probes: Probe[]; lazy: LazyRefs }> {
  const name = "priv/team-a/app";
  const probes: Probe[] = [];
  const ok = async (label: string, path: string, o: { method?: "GET" | "HEAD"; headers?: Record<string, string>; status?: number; want?: Buffer } = {}) => {
    const method = o.method ?? "GET";
    const headers = o.headers ?? {};
    const r = await request(`${s.url}${path}`, { ...headers, ...auth }, method);
    expect(r.status, `${label}: ${r.body.toString("utf8").slice(0, 300)}`).toBe(o.status ?? 200);
    if (o.want !== undefined) expect(r.body.equals(o.want), label).toBe(true);
    probes.push({ label, path, method, headers, secret: method === "HEAD" ? undefined : r.body });
    return r;
  };
  await ok("manifest by tag", `/v2/${name}/manifests/v1`, { headers: ACCEPT, want: teamA.manifestBytes });
  await ok("manifest by tag (HEAD)", `/v2/${name}/manifests/v1`, { headers: ACCEPT, method: "HEAD" });
  await ok("manifest by digest", `/v2/${name}/manifests/${teamA.manifest.digest}`, { headers: ACCEPT, want: teamA.manifestBytes });
  await ok("config blob", `/v2/${name}/blobs/${teamA.config.digest}`, { want: layout.readBlob(teamA.config.digest) });
  const blob = await ok("layer blob", `/v2/${name}/blobs/${teamA.layers[0]!.digest}`, { want: layout.readBlob(teamA.layers[0]!.digest) });
  // Private content must not be marked for shared caches.
  expect(blob.headers.get("cache-control") ?? "").not.toMatch(/\bpublic\b/);
  await ok("tag list", `/v2/${name}/tags/list`);
  const boot = await ok("bootstrap by tag", `/v2/${name}/_skiff/bootstrap/v1`);
  const params = boot.headers.get("skiff-params") ?? "";
  expect(params).toMatch(/^v\d+-c\d+-[a-z-]+$/);
  await ok("bootstrap by digest", `/v2/${name}/_skiff/bootstrap/${teamA.manifest.digest}`, { want: boot.body });
  const b = Bootstrap.decode(boot.body);
  expect(b.chunkCount).toBeGreaterThan(0);
  const rec = b.chunk(0);
  const layer = b.blob(rec.blob).layerDigest;
  const form = rec.compressed ? params.replace(/^v\d+-c\d+-/, "") : "none";
  const chunk = `${toHex(rec.digest)}.${form}`;
  const range = `bytes=${rec.storedOffset}-${rec.storedOffset + rec.storedSize - 1}`;
  await ok("data range", `/v2/${name}/_skiff/layers/${layer}/${params}/data`, { headers: { Range: range }, status: 206 });
  const c = await ok("chunk", `/v2/${name}/_skiff/layers/${layer}/${params}/chunks/${chunk}`);
  expect(c.headers.get("cache-control") ?? "").not.toMatch(/\bpublic\b/);
  // It is all in skiff's store now: the refusals below are about access, not about a cold cache.
  const stored = listAllPaths(s.dataDir);
  for (const d of [teamA.manifest.digest, teamA.layers[0]!.digest]) expect(stored.some((p) => p.includes(d.slice(7))), d).toBe(true);
  return { probes, lazy: { layer, params, chunk, range } };
}

/** A refused answer: an error status, no content-identifying headers, none of the private bytes. */
function expectNothingLeaked(r: Got, what: string, secret?: Buffer) {
  expect(r.status, `${what}: ${r.status} ${r.body.toString("utf8").slice(0, 200)}`).toBeGreaterThanOrEqual(400);
  expect(r.headers.get("docker-content-digest"), what).toBeNull();
  expect(r.headers.get("skiff-manifest-digest"), what).toBeNull();
  if (secret !== undefined && secret.length > 0) expect(r.body.includes(secret.subarray(0, 64)), what).toBe(false);
}

/** Requests for team-a's cached objects under names that are not team-a's repository. */
function otherNames(lazy: LazyRefs): { label: string; path: string; headers?: Record<string, string> }[] {
  const { layer, params, chunk, range } = lazy;
  const m = teamA.manifest.digest;
  return [
    { label: "public repository: blob", path: `/v2/pub/x/app/blobs/${layer}` },
    { label: "public repository: manifest", path: `/v2/pub/x/app/manifests/${m}`, headers: ACCEPT },
    { label: "public repository: bootstrap", path: `/v2/pub/x/app/_skiff/bootstrap/${m}` },
    { label: "public repository: data", path: `/v2/pub/x/app/_skiff/layers/${layer}/${params}/data`, headers: { Range: range } },
    { label: "public repository: chunk", path: `/v2/pub/x/app/_skiff/layers/${layer}/${params}/chunks/${chunk}` },
    { label: "default upstream, public name", path: `/v2/x/app/blobs/${layer}` },
    { label: "default upstream, team-a's name", path: `/v2/team-a/app/blobs/${layer}` },
    { label: "default upstream, team-a's name: data", path: `/v2/team-a/app/_skiff/layers/${layer}/${params}/data`, headers: { Range: range } },
    { label: "?ns=pub", path: `/v2/team-a/app/blobs/${layer}?ns=pub` },
    { label: "?ns=pub's host", path: `/v2/team-a/app/blobs/${layer}?ns=${pub.hostPort}` },
    { label: "?ns=pub with the prefixed name", path: `/v2/priv/team-a/app/blobs/${layer}?ns=pub` },
    { label: "?ns=priv's host with the prefixed name", path: `/v2/priv/team-a/app/blobs/${layer}?ns=${priv.hostPort}` },
    { label: "team-b's repository: blob", path: `/v2/priv/team-b/app/blobs/${layer}` },
    { label: "team-b's repository: manifest", path: `/v2/priv/team-b/app/manifests/${m}`, headers: ACCEPT },
    { label: "team-b's repository: bootstrap", path: `/v2/priv/team-b/app/_skiff/bootstrap/${m}` },
    { label: "team-b's repository: data", path: `/v2/priv/team-b/app/_skiff/layers/${layer}/${params}/data`, headers: { Range: range } },
    { label: "team-b's repository: chunk", path: `/v2/priv/team-b/app/_skiff/layers/${layer}/${params}/chunks/${chunk}` },
    { label: "team-b's repository via ?ns=", path: `/v2/team-b/app/blobs/${layer}?ns=${priv.hostPort}` },
  ];
}

/** Requests for team-a's repository itself through containerd's `?ns=` (host, prefix, alias). */
function viaNs(lazy: LazyRefs): { label: string; path: string; headers?: Record<string, string>; status: number }[] {
  return [
    { label: "?ns=priv's host: manifest", path: `/v2/team-a/app/manifests/v1?ns=${priv.hostPort}`, headers: ACCEPT, status: 200 },
    { label: "?ns=priv's host: blob", path: `/v2/team-a/app/blobs/${lazy.layer}?ns=${priv.hostPort}`, status: 200 },
    { label: "?ns=priv: blob", path: `/v2/team-a/app/blobs/${lazy.layer}?ns=priv`, status: 200 },
    { label: "?ns=alias: data", path: `/v2/team-a/app/_skiff/layers/${lazy.layer}/${lazy.params}/data?ns=${PRIV_ALIAS}`, headers: { Range: lazy.range }, status: 206 },
  ];
}

/** The clients of each mode: who is authorised for team-a, who only for team-b, who is nobody. */
interface ModeClients {
  /** Headers of a client allowed team-a (credentials mode: a token from skiff's token flow). */
  authorised: (s: Skiff) => Promise<Record<string, string>>;
  /** The same client with Basic credentials. */
  authorisedBasic: Record<string, string>;
  /** Clients allowed team-b only, and their team-b repository's manifest as a positive control. */
  teamB: { label: string; headers: Record<string, string> }[];
  /** Credentials that are no good, and the status they get. */
  invalid: { label: string; headers: () => Record<string, string>; status: number }[];
  /** Checks the challenge of a 401. */
  challenge: (s: Skiff, header: string | null) => void;
}

const CLIENTS: Record<ModeName, ModeClients> = {
  credentials: {
    authorised: async (s) => bearer(await skiffLogin(s, "/v2/priv/team-a/app/manifests/v1", CI_A)),
    authorisedBasic: basic(CI_A),
    teamB: [
      { label: "user ci-b (Basic)", headers: basic(CI_B) },
      { label: "static token agent-b", headers: bearer(AGENT_B_TOKEN) },
    ],
    invalid: [
      { label: "ci-a with a wrong password", headers: () => basic({ user: CI_A.user, password: WRONG }), status: 401 },
      { label: "a bearer token skiff never issued", headers: () => bearer(`${AGENT_B_TOKEN}x`), status: 401 },
      {
        // A token the private registry's issuer signed for alice: valid there, meaningless to skiff.
        label: "an upstream registry token",
        headers: () => bearer(issuer.issueToken(ALICE.user, [{ type: "repository", name: "team-a/app", actions: ["pull"] }]).token),
        status: 401,
      },
    ],
    challenge: (s, header) => {
      const c = parseChallenge(header);
      expect(c.scheme, String(header)).toBe("bearer");
      expect(c.params.realm).toBe(`${s.url}/_skiff/token`);
      expect(c.params.service).toBe("skiff");
      expect(c.params.scope).toMatch(/^repository:(priv\/)?team-a\/app:pull$/);
    },
  },
  passthrough: {
    authorised: async () => basic(ALICE),
    authorisedBasic: basic(ALICE),
    teamB: [{ label: "upstream user bob (Basic)", headers: basic(BOB) }],
    // "a refused client with credentials gets 403 DENIED" (docs/configuration.md, passthrough)
    invalid: [
      { label: "alice with a wrong password", headers: () => basic({ user: ALICE.user, password: WRONG }), status: 403 },
      { label: "a user the registry does not know", headers: () => basic({ user: "mallory", password: WRONG }), status: 403 },
    ],
    challenge: (_s, header) => {
      expect(header ?? "").toMatch(/^Basic realm="skiff"/);
    },
  },
};

// ---- setup --------------------------------------------------------------------------------------

const listen = (server: NetServer | HttpServer, host: string) =>
  new Promise<number>((resolve) => server.listen(0, host, () => resolve((server.address() as { port: number }).port)));

beforeAll(async () => {
  canary = createNetServer((socket) => {
    canaryConnections++;
    socket.destroy();
  });
  canaryPort = await listen(canary, "127.0.0.2");
  // An upstream whose blob answers redirect to the canary and whose other answers name it as token realm.
  hostile = createHttpServer((req, res) => {
    hostileRequests++;
    if (req.url === "/v2/") return res.end("{}");
    if (req.url?.includes("/blobs/")) {
      res.writeHead(307, { Location: `http://127.0.0.2:${canaryPort}/storage/blob` });
      return res.end();
    }
    res.writeHead(401, { "WWW-Authenticate": `Bearer realm="http://127.0.0.2:${canaryPort}/token",service="trap"` });
    res.end();
  });
  hostileUrl = `http://127.0.0.1:${await listen(hostile, "127.0.0.1")}`;

  issuer = await TokenIssuer.start({
    users: { [MIRROR.user]: MIRROR.password, [ALICE.user]: ALICE.password, [BOB.user]: BOB.password },
    service: SERVICE,
    issuer: ISSUER,
    acl: { [BOB.user]: ["team-b/app"] },
  });
  pub = await Registry.start({ name: "ac-pub" });
  priv = await Registry.start({
    name: "ac-priv",
    auth: { token: { realm: issuer.realm, service: SERVICE, issuer: ISSUER, rootCertBundle: issuer.certPath } },
  });
  trap = await Registry.start({
    name: "ac-trap",
    auth: { token: { realm: `http://127.0.0.2:${canaryPort}/token`, service: SERVICE, issuer: ISSUER, rootCertBundle: issuer.certPath } },
  });

  layout = new OciLayout(tempDir("ac-layout"));
  pubImage = buildImage(layout, { tag: "pub", seed: "ac-pub", layers: 2, filesPerLayer: 2 });
  teamA = buildImage(layout, { tag: "team-a", seed: "ac-team-a", layers: 2, filesPerLayer: 2 });
  teamB = buildImage(layout, { tag: "team-b", seed: "ac-team-b", layers: 1, filesPerLayer: 2 });
  await pushImage(layout, "pub", `${pub.hostPort}/x/app:v1`);
  await pushImage(layout, "team-a", `${priv.hostPort}/team-a/app:v1`, { creds: `${ALICE.user}:${ALICE.password}` });
  await pushImage(layout, "team-b", `${priv.hostPort}/team-b/app:v1`, { creds: `${ALICE.user}:${ALICE.password}` });

  const secrets = tempDir("ac-secrets");
  mirrorPasswordFile = join(secrets, "mirror-password");
  writeFileSync(mirrorPasswordFile, `${MIRROR.password}\n`, { mode: 0o600 });
  agentTokenFile = join(secrets, "agent-token");
  writeFileSync(agentTokenFile, `${AGENT_B_TOKEN}\n`, { mode: 0o600 });
}, 180_000);

afterAll(async () => {
  for (const s of skiffs.values()) await s.then((x) => x.stop(), () => undefined);
  await trap?.stop();
  await priv?.stop();
  await pub?.stop();
  await issuer?.stop();
  await new Promise((r) => (hostile ? hostile.close(r) : r(undefined)));
  await new Promise((r) => (canary ? canary.close(r) : r(undefined)));
  await teardown();
});

// ---- tests --------------------------------------------------------------------------------------

describe("the setup (no skiff involved)", () => {
  test("the private registry refuses anonymous pulls; the issuer's ACL gives bob team-b/app only", async () => {
    const anon = await request(`${priv.url}/v2/team-a/app/manifests/v1`, ACCEPT);
    expect(anon.status).toBe(401);
    expect(parseChallenge(anon.headers.get("www-authenticate")).params.realm).toBe(issuer.realm);

    const tokenFor = async (l: Login, repo: string) => {
      const r = await request(`${issuer.realm}?service=${SERVICE}&scope=repository:${repo}:pull`, basic(l));
      expect(r.status).toBe(200);
      return (JSON.parse(r.body.toString("utf8")) as { token: string }).token;
    };
    const manifest = async (token: string, repo: string) => (await request(`${priv.url}/v2/${repo}/manifests/v1`, { ...ACCEPT, ...bearer(token) })).status;
    expect(await manifest(await tokenFor(BOB, "team-b/app"), "team-b/app")).toBe(200);
    const refused = await request(`${priv.url}/v2/team-a/app/manifests/v1`, { ...ACCEPT, ...bearer(await tokenFor(BOB, "team-a/app")) });
    expect(refused.status).toBe(401);
    expect(refused.headers.get("www-authenticate")).toContain("insufficient_scope");
    expect(issuer.requests.at(-1)?.access).toEqual([{ type: "repository", name: "team-a/app", actions: [] }]);
    expect(await manifest(await tokenFor(ALICE, "team-a/app"), "team-a/app")).toBe(200);

    // The same with a real client.
    const bob = `${BOB.user}:${BOB.password}`;
    await expectSameCopy(`${priv.hostPort}/team-b/app:v1`, bob, `${priv.hostPort}/team-b/app:v1`, `${ALICE.user}:${ALICE.password}`, teamB);
    const r = await skopeoCopyResult(`docker://${priv.hostPort}/team-a/app:v1`, `dir:${tempDir("ac-bob")}`, { srcCreds: bob, timeoutMs: 60_000 });
    expect(r.code).not.toBe(0);
  }, 120_000);

  test("the trap registry names the canary as its token realm", async () => {
    const r = await request(`${trap.url}/v2/x/app/manifests/v1`, ACCEPT);
    expect(r.status).toBe(401);
    expect(parseChallenge(r.headers.get("www-authenticate")).params.realm).toBe(`http://127.0.0.2:${canaryPort}/token`);
    expect(canaryConnections).toBe(0);
  });
});

describe("one skiff, two registries: skopeo by prefix, containerd by prefix and through ?ns= (credentials mode)", () => {
  let s: Skiff;
  let containerd: Containerd;
  let hostsDir: string;
  const ciA = `${CI_A.user}:${CI_A.password}`;

  beforeAll(async () => {
    s = await skiffFor("credentials");
    containerd = await Containerd.start();
    hostsDir = tempDir("ac-hosts");
    writeMirrorHostsToml(hostsDir, pub.hostPort, s.url);
    writeMirrorHostsToml(hostsDir, priv.hostPort, s.url);
  }, 120_000);

  afterAll(async () => {
    await containerd?.stop();
  });

  test("/v2/ asks for a login (Bearer, realm /_skiff/token); ci-a's password and the static token open it", async () => {
    const anon = await request(`${s.url}/v2/`);
    expect(anon.status).toBe(401);
    expect(ociCode(anon)).toBe("UNAUTHORIZED");
    const c = parseChallenge(anon.headers.get("www-authenticate"));
    expect(c.scheme).toBe("bearer");
    expect(c.params.realm).toBe(`${s.url}/_skiff/token`);
    expect(c.params.service).toBe("skiff");
    expect((await request(`${s.url}/v2/`, basic(CI_A))).status).toBe(200);
    expect((await request(`${s.url}/v2/`, bearer(AGENT_B_TOKEN))).status).toBe(200);
    expect((await request(`${s.url}/v2/`, basic({ user: CI_A.user, password: WRONG }))).status).toBe(401);
  });

  test("the token endpoint: GET with Basic and POST with a password grant give working tokens; a wrong password none", async () => {
    const path = "/v2/priv/team-a/app/manifests/v1";
    for (const method of ["GET", "POST"] as const) {
      const token = await skiffLogin(s, path, CI_A, method);
      const r = await request(`${s.url}${path}`, { ...ACCEPT, ...bearer(token) });
      expect(r.status, method).toBe(200);
      expect(r.body.equals(teamA.manifestBytes)).toBe(true);
    }
    const wrong = await request(`${s.url}/_skiff/token?service=skiff&scope=repository:priv/team-a/app:pull`, basic({ user: CI_A.user, password: WRONG }));
    expect(wrong.status).toBe(401);
    expect(wrong.body.toString("utf8")).not.toMatch(/"(access_)?token"/);
  });

  test("skopeo --src-creds by prefix: pub/x/app and priv/team-a/app are byte-identical to direct copies", async () => {
    await expectSameCopy(`${s.hostPort}/pub/x/app:v1`, ciA, `${pub.hostPort}/x/app:v1`, undefined, pubImage);
    await expectSameCopy(`${s.hostPort}/priv/team-a/app:v1`, ciA, `${priv.hostPort}/team-a/app:v1`, `${ALICE.user}:${ALICE.password}`, teamA);
  }, 180_000);

  test("skopeo without credentials, or as ci-a for team-b, gets nothing", async () => {
    const anon = await skopeoCopyResult(`docker://${s.hostPort}/pub/x/app:v1`, `dir:${tempDir("ac-anon")}`, { timeoutMs: 60_000 });
    expect(anon.code).not.toBe(0);
    const other = await skopeoCopyResult(`docker://${s.hostPort}/priv/team-b/app:v1`, `dir:${tempDir("ac-ci-a-b")}`, { srcCreds: ciA, timeoutMs: 60_000 });
    expect(other.code).not.toBe(0);
  }, 120_000);

  test("ctr --user through the hosts.toml mirror: the pulled digests are the pushed ones, and only skiff asked the registries", async () => {
    for (const [registry, ref, image] of [
      [pub, `${pub.hostPort}/x/app:v1`, pubImage],
      [priv, `${priv.hostPort}/team-a/app:v1`, teamA],
    ] as const) {
      const from = await registry.settledRequestCount();
      const r = await ctrPull(containerd, ref, hostsDir, CI_A);
      expect(r.code, `ctr pull ${ref}:\n${r.stdout}\n${r.stderr}\nskiff log:\n${s.log().slice(-2000)}`).toBe(0);
      expect((await containerd.images()).find((i) => i.ref === ref)?.digest).toBe(image.manifest.digest);
      // containerd falls back to the registry itself when the mirror fails: it must not have needed to.
      expect(await directRequests(registry, from)).toEqual([]);
    }
  }, 360_000);

  test("ctr --user by prefix, straight at skiff: priv/team-a/app has the pushed digest", async () => {
    const ref = `${s.hostPort}/priv/team-a/app:v1`;
    const r = await containerd.ctr(["image", "pull", "--snapshotter", containerd.snapshotter, "--plain-http", "--user", `${CI_A.user}:${CI_A.password}`, ref], { timeoutMs: 180_000 });
    expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(0);
    expect((await containerd.images()).find((i) => i.ref === ref)?.digest).toBe(teamA.manifest.digest);
  }, 200_000);

  test("ctr --user ci-a cannot pull team-b/app (through skiff or around it)", async () => {
    const ref = `${priv.hostPort}/team-b/app:v1`;
    const r = await ctrPull(containerd, ref, hostsDir, CI_A);
    expect(r.code).not.toBe(0);
    expect((await containerd.images()).find((i) => i.ref === ref)).toBeUndefined();
  }, 200_000);
});

describe("passthrough mode: clients pull with their own registry credentials", () => {
  let s: Skiff;
  let containerd: Containerd;
  let hostsDir: string;

  beforeAll(async () => {
    s = await skiffFor("passthrough");
    containerd = await Containerd.start();
    hostsDir = tempDir("ac-hosts-pass");
    writeMirrorHostsToml(hostsDir, priv.hostPort, s.url);
  }, 120_000);

  afterAll(async () => {
    await containerd?.stop();
  });

  test("skopeo without credentials pulls pub/x/app", async () => {
    await expectSameCopy(`${s.hostPort}/pub/x/app:v1`, undefined, `${pub.hostPort}/x/app:v1`, undefined, pubImage);
  }, 120_000);

  // skopeo (like docker) learns from its `GET /v2/` ping whether and how to authenticate and does
  // not retry a 401 on another route, so this passes only because the ping's 200 carries a Basic
  // challenge.
  test("skopeo --src-creds alice pulls priv/team-a/app; bob's credentials get nothing", async () => {
    const alice = `${ALICE.user}:${ALICE.password}`;
    await expectSameCopy(`${s.hostPort}/priv/team-a/app:v1`, alice, `${priv.hostPort}/team-a/app:v1`, alice, teamA);
    const bob = await skopeoCopyResult(`docker://${s.hostPort}/priv/team-a/app:v1`, `dir:${tempDir("ac-pass-bob")}`, { srcCreds: `${BOB.user}:${BOB.password}`, timeoutMs: 60_000 });
    expect(bob.code).not.toBe(0);
  }, 180_000);

  test("ctr --user alice through the mirror pulls team-a/app; only skiff asked the registry", async () => {
    const ref = `${priv.hostPort}/team-a/app:v1`;
    const from = await priv.settledRequestCount();
    const r = await ctrPull(containerd, ref, hostsDir, ALICE);
    expect(r.code, `${r.stdout}\n${r.stderr}\nskiff log:\n${s.log().slice(-2000)}`).toBe(0);
    expect((await containerd.images()).find((i) => i.ref === ref)?.digest).toBe(teamA.manifest.digest);
    expect(await directRequests(priv, from)).toEqual([]);
  }, 200_000);
});

describe("only configured registries are contacted (canary listener on 127.0.0.2)", () => {
  let cred: Skiff;
  let pass: Skiff;
  /** Each skiff with a client that may pull from every configured upstream. */
  let both: { label: string; s: Skiff; auth: Record<string, string> }[] = [];

  beforeAll(async () => {
    cred = await skiffFor("credentials");
    pass = await skiffFor("passthrough");
    both = [
      { label: "credentials", s: cred, auth: basic(CI_A) },
      { label: "passthrough", s: pass, auth: {} },
    ];
  }, 120_000);

  test("a first name component spelling the canary is a repository name on the default upstream", async () => {
    for (const { label, s, auth } of both) {
      const before = await pub.settledRequestCount();
      const r = await request(`${s.url}/v2/127.0.0.2/x/manifests/v1`, { ...ACCEPT, ...auth });
      expect(r.status, label).toBe(404);
      expect(ociCode(r), label).toBe("MANIFEST_UNKNOWN");
      await pub.settledRequestCount();
      expect(pub.accessLog().slice(before).some((l) => l.path.startsWith("/v2/127.0.0.2/x/manifests/v1")), label).toBe(true);
      const withPort = await request(`${s.url}/v2/127.0.0.2:${canaryPort}/x/manifests/v1`, { ...ACCEPT, ...auth });
      expect(withPort.status, label).toBeGreaterThanOrEqual(400);
      expect(withPort.status, label).toBeLessThan(500);
    }
    expect(canaryConnections).toBe(0);
  });

  test("?ns= naming the canary is 404 NAME_UNKNOWN and contacts no upstream", async () => {
    for (const { label, s, auth } of both) {
      const before = [await pub.settledRequestCount(), await priv.settledRequestCount()];
      for (const ns of [`127.0.0.2:${canaryPort}`, "127.0.0.2"]) {
        for (const path of [`/v2/x/app/manifests/v1`, `/v2/x/app/blobs/${pubImage.layers[0]!.digest}`, `/v2/x/app/_skiff/bootstrap/v1`]) {
          const r = await request(`${s.url}${path}?ns=${ns}`, { ...ACCEPT, ...auth });
          expect(r.status, `${label} ${path}?ns=${ns}`).toBe(404);
          expect(ociCode(r), `${label} ${path}?ns=${ns}`).toBe("NAME_UNKNOWN");
        }
      }
      expect([await pub.settledRequestCount(), await priv.settledRequestCount()], label).toEqual(before);
    }
    expect(canaryConnections).toBe(0);
  });

  test("an upstream whose blobs redirect to the canary, or that names it as token realm: OCI errors", async () => {
    const blob = `sha256:${"ab".repeat(32)}`;
    for (const { label, s, auth } of both) {
      const before = hostileRequests;
      for (const path of [`/v2/hostile/e2e/app/blobs/${blob}`, `/v2/e2e/app/blobs/${blob}?ns=hostile`]) {
        const r = await request(`${s.url}${path}`, auth);
        expect(r.status, `${label} ${path}`).toBe(502);
        expect(ociCode(r), `${label} ${path}`).toBe("UNAVAILABLE");
      }
      for (const path of [`/v2/hostile/e2e/app/manifests/v1`, `/v2/hostile/e2e/app/_skiff/bootstrap/v1`]) {
        const r = await request(`${s.url}${path}`, { ...ACCEPT, ...auth });
        expect(r.status, `${label} ${path}`).toBe(502);
        expect(ociCode(r), `${label} ${path}`).toBe("UNAVAILABLE");
      }
      expect(hostileRequests, `${label}: skiff did ask the hostile upstream`).toBeGreaterThan(before);
    }
    expect(canaryConnections).toBe(0);
  });

  test("a real registry whose token realm is the canary: 502 UNAVAILABLE, whoever asks", async () => {
    // skiff filling its cache there, and in passthrough mode skiff checking the client there first
    // (the upstream has credentials, so it is not public): neither can follow the realm.
    const askers = [
      { label: "credentials, ci-a", s: cred, auth: basic(CI_A) },
      { label: "passthrough, anonymous", s: pass, auth: {} },
      { label: "passthrough, alice", s: pass, auth: basic(ALICE) },
    ];
    for (const { label, s, auth } of askers) {
      const before = await trap.settledRequestCount();
      for (const path of [`/v2/trap/x/app/manifests/v1`, `/v2/trap/x/app/blobs/${pubImage.layers[0]!.digest}`, `/v2/x/app/manifests/v1?ns=${trap.hostPort}`]) {
        const r = await request(`${s.url}${path}`, { ...ACCEPT, ...auth });
        expect(r.status, `${label} ${path}: ${r.body.toString("utf8").slice(0, 200)}`).toBe(502);
        expect(ociCode(r), `${label} ${path}`).toBe("UNAVAILABLE");
      }
      expect(await trap.settledRequestCount(), `${label}: skiff did ask the trap registry`).toBeGreaterThan(before);
    }
    expect(canaryConnections).toBe(0);
  });

  test("the canary saw no connection, and it does count connections", async () => {
    expect(canaryConnections).toBe(0);
    await new Promise<void>((resolve, reject) => {
      const c = connect(canaryPort, "127.0.0.2", () => resolve());
      c.on("error", reject);
    });
    for (let i = 0; i < 50 && canaryConnections === 0; i++) await new Promise((r) => setTimeout(r, 20));
    expect(canaryConnections).toBe(1);
  });
});

for (const mode of ["credentials", "passthrough"] as const) {
  describe(`${mode} mode: cached private content reaches only clients allowed its repository`, () => {
    const clients = CLIENTS[mode];
    let s: Skiff;
    let probes: Probe[] = [];
    let lazy: LazyRefs | undefined;

    beforeAll(async () => {
      s = await skiffFor(mode);
    }, 120_000);

    const requireProbes = () => {
      expect(probes.length, "the authorised fetch ran first").toBeGreaterThanOrEqual(10);
      return { probes, lazy: lazy! };
    };

    test("an authorised client fetches team-a's manifests, blobs, tag list, bootstraps, a data range and a chunk", async () => {
      const got = await fetchTeamA(s, await clients.authorised(s));
      probes = got.probes;
      lazy = got.lazy;
    }, 120_000);

    test("without credentials: 401 UNAUTHORIZED with the mode's challenge, for every one of them", async () => {
      for (const p of requireProbes().probes) {
        const r = await request(`${s.url}${p.path}`, p.headers, p.method);
        expect(r.status, p.label).toBe(401);
        if (p.method === "GET") expect(ociCode(r), p.label).toBe("UNAUTHORIZED");
        clients.challenge(s, r.headers.get("www-authenticate"));
        expectNothingLeaked(r, p.label, p.secret);
      }
    });

    test("with credentials that are no good: refused, for every one of them", async () => {
      for (const bad of clients.invalid) {
        for (const p of requireProbes().probes) {
          const r = await request(`${s.url}${p.path}`, { ...p.headers, ...bad.headers() }, p.method);
          expect(r.status, `${bad.label}: ${p.label}`).toBe(bad.status);
          expectNothingLeaked(r, `${bad.label}: ${p.label}`, p.secret);
        }
      }
    });

    test("a client allowed only team-b: its own repository works, team-a's objects are 403 DENIED", async () => {
      for (const client of clients.teamB) {
        const own = await request(`${s.url}/v2/priv/team-b/app/manifests/v1`, { ...ACCEPT, ...client.headers });
        expect(own.status, `${client.label}: team-b/app`).toBe(200);
        expect(own.body.equals(teamB.manifestBytes)).toBe(true);
        for (const p of requireProbes().probes) {
          const r = await request(`${s.url}${p.path}`, { ...p.headers, ...client.headers }, p.method);
          expect(r.status, `${client.label}: ${p.label}`).toBe(403);
          if (p.method === "GET") expect(ociCode(r), `${client.label}: ${p.label}`).toBe("DENIED");
          expectNothingLeaked(r, `${client.label}: ${p.label}`, p.secret);
        }
      }
    });

    test("team-a's repository through ?ns= (registry host, prefix, alias) obeys the same rule", async () => {
      const { lazy: refs } = requireProbes();
      for (const q of viaNs(refs)) {
        const anon = await request(`${s.url}${q.path}`, q.headers ?? {});
        expect(anon.status, `anonymous: ${q.label}`).toBe(401);
        clients.challenge(s, anon.headers.get("www-authenticate"));
        expectNothingLeaked(anon, `anonymous: ${q.label}`);
        for (const client of clients.teamB) {
          const r = await request(`${s.url}${q.path}`, { ...(q.headers ?? {}), ...client.headers });
          expect(r.status, `${client.label}: ${q.label}`).toBe(403);
        }
        const ok = await request(`${s.url}${q.path}`, { ...(q.headers ?? {}), ...clients.authorisedBasic });
        expect(ok.status, `authorised: ${q.label}`).toBe(q.status);
      }
    });

    test("no other name reaches team-a's cached objects (public repositories, the default upstream, team-b's, ?ns=), for anyone", async () => {
      const { lazy: refs, probes: all } = requireProbes();
      const secrets = all.flatMap((p) => (p.secret !== undefined && p.secret.length >= 64 ? [p.secret] : []));
      const who = [
        { label: "anonymous", headers: {} as Record<string, string> },
        { label: "authorised", headers: clients.authorisedBasic },
        ...clients.teamB,
      ];
      for (const client of who) {
        for (const q of otherNames(refs)) {
          const r = await request(`${s.url}${q.path}`, { ...(q.headers ?? {}), ...client.headers });
          const what = `${client.label}: ${q.label}`;
          expectNothingLeaked(r, what);
          for (const secret of secrets) expect(r.body.includes(secret.subarray(0, 64)), what).toBe(false);
        }
      }
    }, 60_000);
  });
}

// After everything above: both skiffs have seen every kind of credential, good and bad.
describe("credentials never appear in skiff's log or metrics", () => {
  const secretStrings = () => {
    const logins = [MIRROR, ALICE, BOB, CI_A, CI_B];
    const wrong = [CI_A, ALICE, { user: "mallory", password: WRONG }].map((l) => ({ user: l.user, password: WRONG }));
    return [
      ...logins.flatMap((l) => [l.password, b64(`${l.user}:${l.password}`)]),
      ...wrong.flatMap((l) => [l.password, b64(`${l.user}:${l.password}`)]),
      AGENT_B_TOKEN,
      ...skiffTokens,
      ...issuer.requests.flatMap((r) => (r.token !== undefined ? [r.token] : [])),
    ];
  };

  for (const mode of ["credentials", "passthrough"] as const) {
    test(`${mode} mode: stderr and /metrics hold no password, token or Basic credential; access decisions are counted`, async () => {
      const s = await skiffFor(mode);
      const metrics = await s.metricsText();
      const log = s.log();
      const secrets = secretStrings();
      expect(secrets.length).toBeGreaterThan(12);
      expect(metrics).toContain("skiff_http_requests_total");
      for (const secret of secrets) {
        expect(log.includes(secret), `log holds ${secret.slice(0, 12)}…`).toBe(false);
        expect(metrics.includes(secret), `metrics hold ${secret.slice(0, 12)}…`).toBe(false);
      }
      // skiff_access_total{mode,result}, and no repository name in any metric.
      const access = parseMetrics(metrics).filter((m) => m.name === "skiff_access_total");
      const count = (result: string) => access.filter((m) => m.labels.result === result).reduce((n, m) => n + m.value, 0);
      expect(access.every((m) => m.labels.mode === mode)).toBe(true);
      expect(count("allowed")).toBeGreaterThan(0);
      expect(count("unauthorized")).toBeGreaterThan(0);
      expect(count("denied")).toBeGreaterThan(0);
      expect(metrics).not.toContain("team-a");
    });
  }

  test("`skiff serve --config … --check` prints the setup without a secret", () => {
    const path = join(tempDir("ac-check"), "skiff.json");
    writeFileSync(path, JSON.stringify(configFor("credentials")));
    const r = spawnSync(process.execPath, [SKIFF_BIN, "serve", "--config", path, "--check"], {
      cwd: REPO_ROOT,
      encoding: "utf8",
      timeout: 20_000,
      env: childEnv(ENV),
    });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain("priv");
    for (const secret of [MIRROR.password, CI_A.password, CI_B.password, AGENT_B_TOKEN]) {
      expect(`${r.stdout}${r.stderr}`.includes(secret)).toBe(false);
    }
  }, 30_000);
});

describe("open mode", () => {
  test("refuses to start with an upstream that is not public, in one line without the secret", async () => {
    const config = {
      upstreams: {
        pub: { url: pub.url },
        priv: { url: priv.url, credentials: { username: MIRROR.user, password: MIRROR.password }, allowHosts: [issuer.hostPort] },
      },
      defaultUpstream: "pub",
      access: { mode: "open" },
    };
    const started = await Skiff.start({ config, startTimeoutMs: 15_000 }).then(
      async (s) => {
        await s.stop();
        return undefined;
      },
      (e: unknown) => (e instanceof Error ? e.message : String(e)),
    );
    expect(started, "skiff started in open mode with a private upstream").toBeDefined();
    expect(started).toMatch(/exited \(code [1-9]/);
    const stderr = started!.slice(started!.indexOf("stderr: ") + "stderr: ".length).trim();
    const lines = stderr.split("\n").filter((l) => l.trim() !== "");
    expect(lines.length, stderr).toBe(1);
    expect(lines[0]).toContain("upstreams.priv");
    expect(stderr).not.toContain(MIRROR.password);
  }, 30_000);

  test("starts with public upstreams only (a credentialed one marked public) and serves anyone", async () => {
    const s = await Skiff.start({
      config: {
        upstreams: {
          pub: { url: pub.url },
          priv: { url: priv.url, credentials: { username: MIRROR.user, password: MIRROR.password }, allowHosts: [issuer.hostPort], public: true },
        },
        defaultUpstream: "pub",
        access: { mode: "open" },
      },
    });
    try {
      const a = await request(`${s.url}/v2/pub/x/app/manifests/v1`, ACCEPT);
      expect(a.status).toBe(200);
      expect(a.body.equals(pubImage.manifestBytes)).toBe(true);
      const b = await request(`${s.url}/v2/priv/team-b/app/manifests/v1`, ACCEPT);
      expect(b.status).toBe(200);
      expect(b.body.equals(teamB.manifestBytes)).toBe(true);
    } finally {
      await s.stop();
    }
  }, 60_000);
});
