// Access modes through the whole app (docs/configuration.md#access-control): open, credentials with
// skiff's token endpoint, and passthrough where a private upstream decides, against fake upstreams.
import { describe, expect, it } from "vitest";
import { resolveConfig, type ConfigEnvironment } from "../../src/config/config.ts";
import { nodeHasher } from "../../src/hash/node.ts";
import { createApp } from "../../src/http/app.ts";
import { MemoryStore } from "../../src/store/memory.ts";
import { bytesOf, FakeRegistry, json, dispatchByOrigin } from "./fakes.ts";

const T0 = 1_700_000_000_000;
const MANIFEST = "application/vnd.oci.image.manifest.v1+json";
const TOKEN_SECRET = "0123456789abcdef0123456789abcdef";
const STATIC_TOKEN = "static-token-0123456789abcdef";
const REALM = "http://skiff.test/_skiff/token";

const basic = (username: string, password: string) => `Basic ${Buffer.from(`${username}:${password}`).toString("base64")}`;
const bearer = (token: string) => `Bearer ${token}`;

function setup(raw: unknown, environment: ConfigEnvironment = {}) {
  const one = new FakeRegistry("http://one.test");
  const two = new FakeRegistry("http://two.test");
  const dispatch = dispatchByOrigin(one, two);
  let clock = T0;
  const skiff = createApp({ config: resolveConfig(raw, environment), fetchFor: () => dispatch, store: new MemoryStore(), hasher: nodeHasher, now: () => clock });
  const request = (path: string, init?: RequestInit) => skiff.app.fetch(new Request(`http://skiff.test${path}`, init)) as Promise<Response>;
  const get = (path: string, authorization?: string, method = "GET") => request(path, { method, headers: authorization ? { Authorization: authorization } : {} });
  return {
    one,
    two,
    skiff,
    request,
    get,
    advance: (ms: number) => (clock += ms),
    access: (mode: string, result: string) => skiff.metrics.get("skiff_access_total", { mode, result }),
  };
}

async function ociError(res: Response): Promise<{ status: number; code: string }> {
  const body = (await res.json()) as { errors: { code: string; message: string }[] };
  expect(body.errors).toHaveLength(1);
  return { status: res.status, code: body.errors[0]!.code };
}

const same = (a: Uint8Array, b: Uint8Array) => Buffer.from(a).equals(Buffer.from(b));

/** Content on `one` under team-a/app and team-b/app. */
function corpContent(one: FakeRegistry) {
  const blobA = bytesOf(5000, 1);
  const blobB = bytesOf(5000, 2);
  const manifest = JSON.stringify({ schemaVersion: 2, mediaType: MANIFEST, layers: [] });
  return {
    blobA,
    blobB,
    digestA: one.addBlob(["team-a/app"], blobA),
    digestB: one.addBlob(["team-b/app"], blobB),
    manifestA: one.addManifest("team-a/app", "v1", manifest),
  };
}

function credentialsConfig(access: Record<string, unknown> = {}) {
  return {
    upstreams: { corp: { url: "http://one.test" } },
    access: {
      mode: "credentials",
      users: [
        { username: "alice", password: "alice-pass", repositories: ["corp/team-a/*"] },
        { username: "bob", password: "bob-pass", repositories: ["corp/team-b/*"] },
      ],
      tokens: [{ name: "agents", token: STATIC_TOKEN, repositories: ["corp/team-a/*"] }],
      tokenSecret: TOKEN_SECRET,
      tokenTtl: 60,
      ...access,
    },
  };
}

async function issue(t: ReturnType<typeof setup>, username = "alice", password = `${username}-pass`): Promise<string> {
  const res = await t.get("/_skiff/token?service=skiff&scope=repository:corp/team-a/app:pull", basic(username, password));
  expect(res.status).toBe(200);
  return ((await res.json()) as { token: string }).token;
}

describe("open mode", () => {
  it("serves anonymous clients, with public cache headers", async () => {
    const t = setup({ upstreams: { corp: { url: "http://one.test" } } });
    const c = corpContent(t.one);
    expect((await t.get("/v2/")).status).toBe(200);
    const blob = await t.get(`/v2/corp/team-a/app/blobs/${c.digestA}`);
    expect(blob.status).toBe(200);
    expect(blob.headers.get("cache-control")).toBe("public, max-age=31536000, immutable");
    expect(same(new Uint8Array(await blob.arrayBuffer()), c.blobA)).toBe(true);
    const cached = await t.get(`/v2/corp/team-a/app/blobs/${c.digestA}`);
    expect(cached.headers.get("cache-control")).toMatch(/^public, /);
    await cached.body?.cancel();
    const manifest = await t.get(`/v2/corp/team-a/app/manifests/${c.manifestA}`);
    expect(manifest.status).toBe(200);
    expect(manifest.headers.get("cache-control")).toMatch(/^public, /);
    expect(t.access("open", "allowed")).toBe(3);
  });
});

describe("credentials mode: challenges", () => {
  it("challenges an anonymous GET /v2/ towards the token endpoint", async () => {
    const t = setup(credentialsConfig());
    for (const path of ["/v2/", "/v2"]) {
      const res = await t.get(path);
      expect(await ociError(res)).toEqual({ status: 401, code: "UNAUTHORIZED" });
      expect(res.headers.get("www-authenticate")).toBe(`Bearer realm="${REALM}",service="skiff"`);
    }
  });

  it("names the repository id in the challenge of a repository route", async () => {
    const t = setup(credentialsConfig());
    const c = corpContent(t.one);
    const res = await t.get(`/v2/corp/team-a/app/blobs/${c.digestA}`);
    expect(await ociError(res)).toEqual({ status: 401, code: "UNAUTHORIZED" });
    expect(res.headers.get("www-authenticate")).toBe(`Bearer realm="${REALM}",service="skiff",scope="repository:corp/team-a/app:pull"`);
    // Through the default upstream the scope still names the repository id.
    const viaDefault = await t.get("/v2/team-a/app/manifests/v1");
    expect(viaDefault.headers.get("www-authenticate")).toContain(`scope="repository:corp/team-a/app:pull"`);
    await viaDefault.body?.cancel();
  });

  it("uses the host the client used for the realm, and access.realm when set", async () => {
    const t = setup(credentialsConfig());
    const other = await t.skiff.app.fetch(new Request("http://mirror.internal:5000/v2/"));
    expect(other.headers.get("www-authenticate")).toBe(`Bearer realm="http://mirror.internal:5000/_skiff/token",service="skiff"`);
    const r = setup(credentialsConfig({ realm: "https://mirror.example/_skiff/token" }));
    const base = await r.get("/v2/");
    expect(base.headers.get("www-authenticate")).toBe(`Bearer realm="https://mirror.example/_skiff/token",service="skiff"`);
    const repo = await r.get("/v2/corp/team-a/app/manifests/v1");
    expect(repo.headers.get("www-authenticate")).toBe(`Bearer realm="https://mirror.example/_skiff/token",service="skiff",scope="repository:corp/team-a/app:pull"`);
  });

  it("marks a challenge to a client with wrong credentials invalid_token", async () => {
    const t = setup(credentialsConfig());
    const res = await t.get("/v2/corp/team-a/app/manifests/v1", basic("alice", "wrong"));
    expect(await ociError(res)).toEqual({ status: 401, code: "UNAUTHORIZED" });
    expect(res.headers.get("www-authenticate")).toContain(`error="invalid_token"`);
    const base = await t.get("/v2/", basic("mallory", "alice-pass"));
    expect(base.status).toBe(401);
    expect(base.headers.get("www-authenticate")).toContain(`error="invalid_token"`);
    expect((await t.get("/v2/", "Digest abc")).status).toBe(401);
    expect(t.one.requests).toEqual([]);
  });
});

describe("credentials mode: token endpoint", () => {
  it("issues a token for Basic credentials on GET", async () => {
    const t = setup(credentialsConfig());
    const res = await t.get("/_skiff/token?service=skiff&scope=repository:corp/team-a/app:pull", basic("alice", "alice-pass"));
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/^application\/json/);
    expect(res.headers.get("cache-control")).toBe("no-store");
    const body = (await res.json()) as Record<string, unknown>;
    expect(Object.keys(body).sort()).toEqual(["access_token", "expires_in", "issued_at", "token"]);
    expect(typeof body.token).toBe("string");
    expect(body.access_token).toBe(body.token);
    expect(body.expires_in).toBe(60);
    expect(body.issued_at).toBe(new Date(T0).toISOString());
  });

  it("issues a token for an OAuth2 password grant on POST", async () => {
    const t = setup(credentialsConfig());
    const form = new URLSearchParams({ grant_type: "password", username: "alice", password: "alice-pass", service: "skiff", client_id: "containerd" });
    const res = await t.request("/_skiff/token", { method: "POST", headers: { "Content-Type": "application/x-www-form-urlencoded" }, body: form.toString() });
    expect(res.status).toBe(200);
    const body = (await res.json()) as { token: string; access_token: string; expires_in: number };
    expect(body.access_token).toBe(body.token);
    expect(body.expires_in).toBe(60);
    expect((await t.get("/v2/", bearer(body.token))).status).toBe(200);
  });

  it("refuses wrong or missing credentials", async () => {
    const t = setup(credentialsConfig());
    for (const authorization of [basic("alice", "wrong"), basic("nobody", "alice-pass"), undefined, bearer(STATIC_TOKEN)]) {
      const res = await t.get("/_skiff/token", authorization);
      expect(await ociError(res)).toEqual({ status: 401, code: "UNAUTHORIZED" });
      expect(res.headers.get("www-authenticate")).toBe(`Basic realm="skiff"`);
    }
    const post = (fields: Record<string, string>) =>
      t.request("/_skiff/token", { method: "POST", headers: { "Content-Type": "application/x-www-form-urlencoded" }, body: new URLSearchParams(fields).toString() });
    const wrong = await post({ grant_type: "password", username: "alice", password: "wrong" });
    expect(wrong.status).toBe(401);
    expect(await wrong.json()).toEqual({ error: "invalid_grant" });
    const missing = await post({ grant_type: "password", username: "alice" });
    expect(missing.status).toBe(401);
    expect(await missing.json()).toEqual({ error: "invalid_grant" });
    const grant = await post({ grant_type: "refresh_token", refresh_token: "x" });
    expect(grant.status).toBe(400);
    expect(await grant.json()).toEqual({ error: "unsupported_grant_type" });
  });

  it("reads at most 16 KiB of a POST body, with or without Content-Length", async () => {
    const t = setup(credentialsConfig());
    const big = new TextEncoder().encode(`grant_type=password&username=alice&password=alice-pass&pad=${"x".repeat(20 * 1024)}`);
    let sent = 0;
    const streamed = new ReadableStream<Uint8Array>({
      pull(c) {
        if (sent >= big.byteLength) return c.close();
        c.enqueue(big.subarray(sent, sent + 4096));
        sent += 4096;
      },
    });
    const res = await t.request("/_skiff/token", { method: "POST", body: streamed, duplex: "half" } as RequestInit);
    expect(res.status).toBe(400);
    expect(sent).toBeLessThan(big.byteLength);
  });

  it("is not there in the other modes", async () => {
    const open = setup({ upstreams: { corp: { url: "http://one.test" } } });
    const passthrough = setup({ upstreams: { corp: { url: "http://one.test" } }, access: { mode: "passthrough", users: [{ username: "alice", password: "alice-pass" }] } });
    for (const t of [open, passthrough]) {
      const get = await t.get("/_skiff/token", basic("alice", "alice-pass"));
      expect(await ociError(get)).toEqual({ status: 404, code: "NAME_UNKNOWN" });
      const post = await t.request("/_skiff/token", { method: "POST", body: "grant_type=password&username=alice&password=alice-pass" });
      expect(post.status).toBe(404);
    }
  });
});

describe("credentials mode: pulling", () => {
  it("lets an issued token pull on /v2/ and repository routes, with private cache headers", async () => {
    const t = setup(credentialsConfig());
    const c = corpContent(t.one);
    const token = await issue(t);
    expect((await t.get("/v2/", bearer(token))).status).toBe(200);
    const blob = await t.get(`/v2/corp/team-a/app/blobs/${c.digestA}`, bearer(token));
    expect(blob.status).toBe(200);
    expect(blob.headers.get("cache-control")).toBe("private, max-age=31536000, immutable");
    expect(same(new Uint8Array(await blob.arrayBuffer()), c.blobA)).toBe(true);
    const cached = await t.get(`/v2/corp/team-a/app/blobs/${c.digestA}`, bearer(token));
    expect(cached.headers.get("cache-control")).toBe("private, max-age=31536000, immutable");
    await cached.body?.cancel();
    const byTag = await t.get("/v2/corp/team-a/app/manifests/v1", bearer(token));
    expect(byTag.status).toBe(200);
    expect(byTag.headers.get("docker-content-digest")).toBe(c.manifestA);
    const byDigest = await t.get(`/v2/corp/team-a/app/manifests/${c.manifestA}`, bearer(token));
    expect(byDigest.headers.get("cache-control")).toBe("private, max-age=31536000, immutable");
  });

  it("accepts Basic credentials and static tokens directly on every route", async () => {
    const t = setup(credentialsConfig());
    const c = corpContent(t.one);
    for (const authorization of [basic("alice", "alice-pass"), bearer(STATIC_TOKEN), `bearer ${STATIC_TOKEN}`]) {
      expect((await t.get("/v2/", authorization)).status).toBe(200);
      const res = await t.get(`/v2/corp/team-a/app/blobs/${c.digestA}`, authorization);
      expect(res.status).toBe(200);
      expect(same(new Uint8Array(await res.arrayBuffer()), c.blobA)).toBe(true);
    }
    // The static token is limited to its repositories too.
    expect(await ociError(await t.get(`/v2/corp/team-b/app/blobs/${c.digestB}`, bearer(STATIC_TOKEN)))).toEqual({ status: 403, code: "DENIED" });
  });

  it("refuses an expired token with invalid_token", async () => {
    const t = setup(credentialsConfig());
    const c = corpContent(t.one);
    const token = await issue(t);
    t.advance(59_000);
    expect((await t.get(`/v2/corp/team-a/app/blobs/${c.digestA}`, bearer(token))).status).toBe(200);
    t.advance(1_000);
    for (const path of ["/v2/", `/v2/corp/team-a/app/blobs/${c.digestA}`]) {
      const res = await t.get(path, bearer(token));
      expect(await ociError(res)).toEqual({ status: 401, code: "UNAUTHORIZED" });
      expect(res.headers.get("www-authenticate")).toMatch(/^Bearer realm="http:\/\/skiff\.test\/_skiff\/token",service="skiff".*,error="invalid_token"$/);
    }
    // A fresh token works again.
    expect((await t.get(`/v2/corp/team-a/app/blobs/${c.digestA}`, bearer(await issue(t)))).status).toBe(200);
  });

  it("refuses a tampered token and one signed with another key", async () => {
    const t = setup(credentialsConfig());
    const c = corpContent(t.one);
    const token = await issue(t);
    const [payload, mac] = token.split(".") as [string, string];
    const claims = JSON.parse(Buffer.from(payload, "base64url").toString()) as { sub: string; iat: number; exp: number };
    expect(claims.sub).toBe("alice");
    const forge = (changes: Partial<typeof claims>) => `${Buffer.from(JSON.stringify({ ...claims, ...changes })).toString("base64url")}.${mac}`;
    const flipped = `${payload}.${mac.slice(0, 10)}${mac[10] === "A" ? "B" : "A"}${mac.slice(11)}`;
    const otherKey = setup(credentialsConfig({ tokenSecret: "another-secret-0123456789abcdef0123" }));
    const foreign = await issue(otherKey);
    const path = `/v2/corp/team-b/app/blobs/${c.digestB}`;
    expect((await t.get(path, bearer(forge({ sub: "bob" })))).status).toBe(401);
    expect((await t.get(`/v2/corp/team-a/app/blobs/${c.digestA}`, bearer(forge({ exp: claims.exp + 86_400 })))).status).toBe(401);
    expect((await t.get(`/v2/corp/team-a/app/blobs/${c.digestA}`, bearer(flipped))).status).toBe(401);
    const res = await t.get(`/v2/corp/team-a/app/blobs/${c.digestA}`, bearer(foreign));
    expect(res.status).toBe(401);
    expect(res.headers.get("www-authenticate")).toContain(`error="invalid_token"`);
    expect(t.one.requests).toEqual([]);
    // A replica with the same key accepts the token.
    const replica = setup(credentialsConfig());
    corpContent(replica.one);
    expect((await replica.get(`/v2/corp/team-a/app/blobs/${c.digestA}`, bearer(token))).status).toBe(200);
  });

  it("answers 403 DENIED to a user whose repositories do not match, without asking the upstream", async () => {
    const t = setup(credentialsConfig());
    const c = corpContent(t.one);
    const token = await issue(t, "bob");
    for (const authorization of [bearer(token), basic("bob", "bob-pass")]) {
      const res = await t.get(`/v2/corp/team-a/app/blobs/${c.digestA}`, authorization);
      expect(await ociError(res)).toEqual({ status: 403, code: "DENIED" });
      expect(res.headers.get("www-authenticate")).toBeNull();
    }
    expect(t.one.requests).toEqual([]);
    expect((await t.get(`/v2/corp/team-b/app/blobs/${c.digestB}`, bearer(token))).status).toBe(200);
  });

  it("does not show a blob cached for one repository to a user of another that lacks it", async () => {
    const t = setup(credentialsConfig());
    const c = corpContent(t.one);
    expect((await t.get(`/v2/corp/team-a/app/blobs/${c.digestA}`, basic("alice", "alice-pass"))).status).toBe(200);
    const res = await t.get(`/v2/corp/team-b/app/blobs/${c.digestA}`, basic("bob", "bob-pass"));
    expect(res.status).toBe(404);
    await res.body?.cancel();
  });

  it("counts skiff_access_total by mode and result, without repository names or credentials", async () => {
    const t = setup(credentialsConfig());
    const c = corpContent(t.one);
    await (await t.get(`/v2/corp/team-a/app/blobs/${c.digestA}`)).body?.cancel();
    await (await t.get(`/v2/corp/team-a/app/blobs/${c.digestA}`, basic("alice", "wrong"))).body?.cancel();
    await (await t.get(`/v2/corp/team-a/app/blobs/${c.digestA}`, basic("alice", "alice-pass"))).body?.cancel();
    await (await t.get(`/v2/corp/team-a/app/manifests/v1`, basic("alice", "alice-pass"))).body?.cancel();
    await (await t.get(`/v2/corp/team-b/app/blobs/${c.digestB}`, basic("alice", "alice-pass"))).body?.cancel();
    expect(t.access("credentials", "unauthorized")).toBe(2);
    expect(t.access("credentials", "allowed")).toBe(2);
    expect(t.access("credentials", "denied")).toBe(1);
    expect(t.access("credentials", "unavailable")).toBe(0);
    const text = t.skiff.metrics.render();
    expect(text).toContain(`skiff_access_total{mode="credentials",result="allowed"} 2`);
    for (const leak of ["team-a", "team-b", "alice", "alice-pass", TOKEN_SECRET]) expect(text).not.toContain(leak);
  });
});

describe("credentials mode: every route obeys", () => {
  const hex = "ab".repeat(32);
  function routes(c: ReturnType<typeof corpContent>): [string, string][] {
    const base = "/v2/corp/team-a/app";
    return [
      ["GET", `${base}/manifests/v1`],
      ["HEAD", `${base}/manifests/v1`],
      ["GET", `${base}/manifests/${c.manifestA}`],
      ["HEAD", `${base}/manifests/${c.manifestA}`],
      ["GET", `${base}/blobs/${c.digestA}`],
      ["HEAD", `${base}/blobs/${c.digestA}`],
      ["GET", `/v2/team-a/app/blobs/${c.digestA}?ns=corp`],
      ["GET", `/v2/team-a/app/blobs/${c.digestA}`],
      ["GET", `${base}/tags/list`],
      ["GET", `${base}/tags/list?n=1`],
      ["GET", `${base}/_skiff/bootstrap/v1`],
      ["GET", `${base}/_skiff/bootstrap/${c.manifestA}`],
      ["GET", `${base}/_skiff/layers/${c.digestA}/v1-c20-none/data`],
      ["GET", `${base}/_skiff/layers/${c.digestA}/v1-c20-none/chunks/${hex}.none`],
    ];
  }

  it("answers anonymous requests 401 and asks the upstream nothing", async () => {
    const t = setup(credentialsConfig());
    const c = corpContent(t.one);
    for (const [method, path] of routes(c)) {
      const res = await t.get(path, undefined, method);
      expect(res.status, `${method} ${path}`).toBe(401);
      expect(res.headers.get("www-authenticate"), `${method} ${path}`).toBe(`Bearer realm="${REALM}",service="skiff",scope="repository:corp/team-a/app:pull"`);
      await res.body?.cancel();
    }
    expect(t.one.requests).toEqual([]);
  });

  it("keeps refusing once the content is cached", async () => {
    const t = setup(credentialsConfig());
    const c = corpContent(t.one);
    const alice = basic("alice", "alice-pass");
    expect((await t.get(`/v2/corp/team-a/app/blobs/${c.digestA}`, alice)).status).toBe(200);
    expect((await t.get(`/v2/corp/team-a/app/manifests/v1`, alice)).status).toBe(200);
    expect((await t.get(`/v2/corp/team-a/app/manifests/${c.manifestA}`, alice)).status).toBe(200);
    const asked = t.one.requests.length;
    for (const [method, path] of routes(c)) {
      for (const authorization of [undefined, basic("alice", "wrong"), bearer("not-a-token")]) {
        const res = await t.get(path, authorization, method);
        expect(res.status, `${method} ${path} ${authorization}`).toBe(401);
        await res.body?.cancel();
      }
      const denied = await t.get(path, basic("bob", "bob-pass"), method);
      expect(denied.status, `${method} ${path} as bob`).toBe(403);
      await denied.body?.cancel();
    }
    expect(t.one.requests.length).toBe(asked);
  });
});

describe("passthrough mode", () => {
  const ALICE = basic("alice", "alice-pass");
  const MIRROR = basic("mirror", "mirror-pass");

  /** `pub` is public on one.test; `priv` on two.test wants Basic auth and lets alice list team/app only. */
  function passthrough(access: Record<string, unknown> = {}) {
    const t = setup({
      upstreams: { pub: { url: "http://one.test" }, priv: { url: "http://two.test", credentials: { username: "mirror", password: "mirror-pass" } } },
      access: { mode: "passthrough", ...access },
    });
    const privBlob = bytesOf(6000, 3);
    const pubBlob = bytesOf(6000, 4);
    const manifest = JSON.stringify({ schemaVersion: 2, mediaType: MANIFEST, layers: [] });
    const content = {
      privBlob,
      pubBlob,
      privDigest: t.two.addBlob(["team/app", "team/other"], privBlob),
      privManifest: t.two.addManifest("team/app", "v1", manifest),
      pubDigest: t.one.addBlob(["lib/x"], pubBlob),
    };
    t.two.override = (req) => {
      const auth = req.headers.get("authorization") ?? "";
      const tags = req.url.pathname.endsWith("/tags/list");
      if (auth === MIRROR && !tags) return undefined;
      if (auth === ALICE && tags) {
        return req.url.pathname === "/v2/team/app/tags/list" ? json(200, { name: "team/app", tags: ["v1"] }) : json(403, { errors: [{ code: "DENIED", message: "no" }] });
      }
      return json(401, { errors: [{ code: "UNAUTHORIZED", message: "log in" }] }, req.method === "HEAD", { "WWW-Authenticate": 'Basic realm="x"' });
    };
    const probes = () => t.two.count("/tags/list");
    return { ...t, ...content, probes };
  }

  it("answers /v2/ to anyone", async () => {
    const t = passthrough();
    expect((await t.get("/v2/")).status).toBe(200);
  });

  it("challenges an anonymous client with Basic after the upstream refused it, serving nothing", async () => {
    const t = passthrough();
    const res = await t.get(`/v2/priv/team/app/blobs/${t.privDigest}`);
    expect(await ociError(res)).toEqual({ status: 401, code: "UNAUTHORIZED" });
    expect(res.headers.get("www-authenticate")).toBe(`Basic realm="skiff"`);
    expect(t.two.requests.map((r) => `${r.method} ${r.url.pathname}${r.url.search} ${r.headers.get("authorization")}`)).toEqual(["GET /v2/team/app/tags/list?n=1 null"]);
    expect(t.access("passthrough", "unauthorized")).toBe(1);
  });

  it("serves a client the upstream accepts, privately, and fills the cache with the configured credentials", async () => {
    const t = passthrough();
    const res = await t.get(`/v2/priv/team/app/blobs/${t.privDigest}`, ALICE);
    expect(res.status).toBe(200);
    expect(res.headers.get("cache-control")).toBe("private, max-age=31536000, immutable");
    expect(same(new Uint8Array(await res.arrayBuffer()), t.privBlob)).toBe(true);
    const manifest = await t.get(`/v2/priv/team/app/manifests/v1`, ALICE);
    expect(manifest.status).toBe(200);
    expect(manifest.headers.get("docker-content-digest")).toBe(t.privManifest);
    const withAlice = t.two.requests.filter((r) => r.headers.get("authorization") === ALICE);
    expect(withAlice.length).toBeGreaterThan(0);
    // The client's credentials are used for the check only.
    for (const r of withAlice) expect(r.url.pathname).toBe("/v2/team/app/tags/list");
    expect(t.two.requests.some((r) => r.url.pathname.includes("/blobs/") && r.headers.get("authorization") === MIRROR)).toBe(true);
    expect(t.access("passthrough", "allowed")).toBe(2);
  });

  it("answers 403 DENIED to credentials the upstream refuses", async () => {
    const t = passthrough();
    for (const [authorization, path] of [
      [basic("alice", "wrong"), `/v2/priv/team/app/blobs/${t.privDigest}`],
      [basic("mallory", "x"), `/v2/priv/team/app/manifests/v1`],
      [ALICE, `/v2/priv/team/other/blobs/${t.privDigest}`],
    ] as const) {
      const res = await t.get(path, authorization);
      expect(await ociError(res), `${authorization} ${path}`).toEqual({ status: 403, code: "DENIED" });
    }
    expect(t.two.requests.every((r) => r.url.pathname.endsWith("/tags/list"))).toBe(true);
    expect(t.access("passthrough", "denied")).toBe(3);
  });

  it("asks Bearer clients for Basic credentials", async () => {
    const t = passthrough();
    const res = await t.get(`/v2/priv/team/app/blobs/${t.privDigest}`, bearer("some-token"));
    expect(res.status).toBe(401);
    expect(res.headers.get("www-authenticate")).toBe(`Basic realm="skiff"`);
    expect(t.two.requests).toEqual([]);
  });

  it("keeps a decision for decisionTtl per credentials and repository", async () => {
    const t = passthrough();
    const path = `/v2/priv/team/app/blobs/${t.privDigest}`;
    expect((await t.get(path, ALICE)).status).toBe(200);
    const afterFirst = t.probes();
    expect(afterFirst).toBeGreaterThan(0);
    t.advance(59_000);
    expect((await t.get(path, ALICE)).status).toBe(200);
    expect((await t.get(`/v2/priv/team/app/manifests/v1`, ALICE)).status).toBe(200);
    expect(t.probes()).toBe(afterFirst);
    // Other credentials, or another repository, are another decision.
    expect((await t.get(path, basic("alice", "wrong"))).status).toBe(403);
    const afterOther = t.probes();
    expect(afterOther).toBeGreaterThan(afterFirst);
    expect((await t.get(`/v2/priv/team/other/blobs/${t.privDigest}`, ALICE)).status).toBe(403);
    expect(t.probes()).toBeGreaterThan(afterOther);
    const beforeExpiry = t.probes();
    t.advance(1_001);
    expect((await t.get(path, ALICE)).status).toBe(200);
    expect(t.probes()).toBeGreaterThan(beforeExpiry);
  });

  it("keeps a refusal too, and follows a changed upstream answer after decisionTtl", async () => {
    const t = passthrough({ decisionTtl: 10 });
    const path = `/v2/priv/team/app/blobs/${t.privDigest}`;
    expect((await t.get(path)).status).toBe(401);
    expect((await t.get(path)).status).toBe(401);
    expect(t.probes()).toBe(1);
    const strict = t.two.override!;
    // The upstream now lets anyone list team/app.
    t.two.override = (req) => (req.url.pathname === "/v2/team/app/tags/list" ? json(200, { tags: [] }) : strict(req));
    t.advance(9_000);
    expect((await t.get(path)).status).toBe(401);
    expect(t.probes()).toBe(1);
    t.advance(1_000);
    const res = await t.get(path);
    expect(res.status).toBe(200);
    expect(res.headers.get("cache-control")).toMatch(/^private, /);
    expect(t.probes()).toBe(2);
  });

  it("checks every request when decisionTtl is 0", async () => {
    const t = passthrough({ decisionTtl: 0 });
    const path = `/v2/priv/team/app/blobs/${t.privDigest}`;
    await (await t.get(path)).body?.cancel();
    await (await t.get(path)).body?.cancel();
    expect(t.probes()).toBe(2);
  });

  it("serves a public upstream to anonymous clients without a check, publicly", async () => {
    const t = passthrough();
    const res = await t.get(`/v2/pub/lib/x/blobs/${t.pubDigest}`);
    expect(res.status).toBe(200);
    expect(res.headers.get("cache-control")).toBe("public, max-age=31536000, immutable");
    expect(same(new Uint8Array(await res.arrayBuffer()), t.pubBlob)).toBe(true);
    expect(t.one.count("/tags/list")).toBe(0);
    expect(t.two.requests).toEqual([]);
    // Credentials sent along don't make it private or trigger a check.
    const withCreds = await t.get(`/v2/pub/lib/x/blobs/${t.pubDigest}`, ALICE);
    expect(withCreds.headers.get("cache-control")).toMatch(/^public, /);
    await withCreds.body?.cancel();
    expect(t.one.count("/tags/list")).toBe(0);
  });

  it("answers 502 UNAVAILABLE and serves nothing when the upstream can't be reached for the check", async () => {
    const t = passthrough();
    const path = `/v2/priv/team/app/blobs/${t.privDigest}`;
    // Cached first, so serving it would need no upstream at all.
    expect((await t.get(path, ALICE)).status).toBe(200);
    t.two.down = true;
    for (const authorization of [basic("bob", "bob-pass"), undefined]) {
      const res = await t.get(path, authorization);
      expect(await ociError(res)).toEqual({ status: 502, code: "UNAVAILABLE" });
      expect(res.headers.get("cache-control")).toBeNull();
    }
    expect(t.access("passthrough", "unavailable")).toBe(2);
    // An outage is not remembered as a decision.
    t.two.down = false;
    expect((await t.get(path)).status).toBe(401);
  });

  it("answers anonymous requests to every route of a private upstream 401, asking only tags/list", async () => {
    const t = passthrough();
    const hex = "cd".repeat(32);
    const base = "/v2/priv/team/app";
    const routes: [string, string][] = [
      ["GET", `${base}/manifests/v1`],
      ["HEAD", `${base}/manifests/${t.privManifest}`],
      ["GET", `${base}/blobs/${t.privDigest}`],
      ["HEAD", `${base}/blobs/${t.privDigest}`],
      ["GET", `${base}/tags/list`],
      ["GET", `/v2/team/app/blobs/${t.privDigest}?ns=two.test`],
      ["GET", `${base}/_skiff/bootstrap/v1`],
      ["GET", `${base}/_skiff/layers/${t.privDigest}/v1-c20-none/data`],
      ["GET", `${base}/_skiff/layers/${t.privDigest}/v1-c20-none/chunks/${hex}.none`],
    ];
    for (const [method, path] of routes) {
      const res = await t.get(path, undefined, method);
      expect(res.status, `${method} ${path}`).toBe(401);
      expect(res.headers.get("www-authenticate")).toBe(`Basic realm="skiff"`);
      await res.body?.cancel();
    }
    expect(t.two.requests.length).toBeGreaterThan(0);
    expect(t.two.requests.every((r) => r.url.pathname === "/v2/team/app/tags/list" && r.headers.get("authorization") === null)).toBe(true);
  });
});
