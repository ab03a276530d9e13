import type { IncomingMessage, ServerResponse } from "node:http";
import { afterEach, describe, expect, it } from "vitest";
import { OciError } from "../../src/oci/errors.ts";
import { Upstream, UpstreamUnreachable, type UpstreamOptions } from "../../src/oci/upstream.ts";
import { listen, type Listener } from "./fakes.ts";

const open: Listener[] = [];
afterEach(async () => {
  for (const l of open.splice(0)) await l.close();
});

async function server(handler: (req: IncomingMessage, res: ServerResponse) => void, host = "127.0.0.1"): Promise<Listener> {
  const l = await listen(handler, host);
  open.push(l);
  return l;
}

/** A listener nobody may contact: any connection to it is a failure of the test. */
function forbidden(): Promise<Listener> {
  return server((_req, res) => res.end("should never be reached"), "127.0.0.2");
}

const basic = (user: string, pass: string) => `Basic ${Buffer.from(`${user}:${pass}`).toString("base64")}`;

function send(res: ServerResponse, status: number, body = "", headers: Record<string, string> = {}): void {
  res.writeHead(status, { "Content-Length": String(Buffer.byteLength(body)), ...headers });
  res.end(body);
}

const paths = (l: Listener, prefix: string) => l.requests.filter((r) => r.url.startsWith(prefix));

describe("Upstream: authentication", () => {
  it("sends anonymous requests with identity encoding and the query string", async () => {
    const reg = await server((_req, res) => send(res, 200, '{"tags":[]}'));
    const up = new Upstream({ url: reg.url });
    const res = await up.request("lib/app", "tags/list", { query: "n=10&last=a", headers: { Accept: "application/json" } });
    expect(res.status).toBe(200);
    expect(await res.text()).toBe('{"tags":[]}');
    expect(reg.requests).toHaveLength(1);
    const r = reg.requests[0]!;
    expect(r.url).toBe("/v2/lib/app/tags/list?n=10&last=a");
    expect(r.headers.authorization).toBeUndefined();
    expect(r.headers["accept-encoding"]).toBe("identity");
    expect(r.headers.accept).toBe("application/json");
  });

  it("answers a Basic challenge with the configured credentials and then sends them up front", async () => {
    const reg = await server((req, res) => {
      if (req.headers.authorization === basic("alice", "s3cret")) return send(res, 200, "ok");
      send(res, 401, "", { "WWW-Authenticate": 'Basic realm="registry"' });
    });
    const up = new Upstream({ url: reg.url, credentials: { username: "alice", password: "s3cret" } });
    expect((await up.request("a", "manifests/latest")).status).toBe(200);
    expect(reg.requests.map((r) => r.headers.authorization ?? null)).toEqual([null, basic("alice", "s3cret")]);
    expect((await up.request("a", "manifests/other")).status).toBe(200);
    expect(reg.requests).toHaveLength(3); // no second challenge round-trip
    expect(reg.requests[2]!.headers.authorization).toBe(basic("alice", "s3cret"));
  });

  it("returns a Basic 401 as is when it has no credentials", async () => {
    const reg = await server((_req, res) => send(res, 401, "", { "WWW-Authenticate": 'Basic realm="registry"' }));
    const up = new Upstream({ url: reg.url });
    expect((await up.request("a", "manifests/latest")).status).toBe(401);
    expect(reg.requests).toHaveLength(1);
  });

  describe("Bearer token flow", () => {
    const SCOPE = "repository:lib/app:pull";
    const revoked = new Set<string>();
    afterEach(() => revoked.clear());

    /** A registry that accepts tokens issued by `auth` and a token service that counts issues. */
    async function setup(opts: { lifetime?: number; holdTokens?: () => Promise<void>; tokenHost?: "same" | "other" } = {}) {
      let issued = 0;
      const valid = new Set<string>();
      const tokenHandler = async (req: IncomingMessage, res: ServerResponse) => {
        if (req.headers.authorization !== basic("bob", "pw")) return send(res, 401, "");
        await opts.holdTokens?.();
        const token = `T${++issued}`;
        valid.add(token);
        send(res, 200, JSON.stringify({ token, expires_in: opts.lifetime ?? 300 }), { "Content-Type": "application/json" });
      };
      let realm = "";
      const reg = await server((req, res) => {
        if (req.url?.startsWith("/token")) return void tokenHandler(req, res);
        const auth = req.headers.authorization ?? "";
        if (auth.startsWith("Bearer ") && valid.has(auth.slice(7)) && !revoked.has(auth.slice(7))) return send(res, 200, "content");
        const repo = /^\/v2\/(.+)\/(?:manifests|blobs|tags)\//.exec(req.url ?? "")?.[1] ?? "";
        send(res, 401, "", { "WWW-Authenticate": `Bearer realm="${realm}",service="fake-registry",scope="repository:${repo}:pull"` });
      });
      const auth = opts.tokenHost === "other" ? await server((req, res) => void tokenHandler(req, res)) : reg;
      realm = `${auth.url}/token`;
      let clock = 1_700_000_000_000;
      const up = new Upstream({
        url: reg.url,
        credentials: { username: "bob", password: "pw" },
        allowHosts: auth === reg ? [] : [auth.host],
        now: () => clock,
      });
      return { reg, auth, up, tokenRequests: () => paths(auth, "/token"), advance: (ms: number) => (clock += ms), issued: () => issued };
    }

    it("fetches a token with Basic credentials, service and scope, then retries with it", async () => {
      const { reg, auth, up, tokenRequests } = await setup({ tokenHost: "other" });
      const res = await up.request("lib/app", "manifests/latest");
      expect(res.status).toBe(200);
      expect(await res.text()).toBe("content");
      const tokens = tokenRequests();
      expect(tokens).toHaveLength(1);
      const q = new URL(tokens[0]!.url, auth.url).searchParams;
      expect(q.get("service")).toBe("fake-registry");
      expect(q.getAll("scope")).toEqual([SCOPE]);
      expect(tokens[0]!.headers.authorization).toBe(basic("bob", "pw"));
      const regRequests = reg.requests.map((r) => r.headers.authorization ?? null);
      expect(regRequests).toEqual([null, "Bearer T1"]);
    });

    it("reuses the token while it lives and fetches a new one once it expired", async () => {
      const { reg, up, tokenRequests, advance } = await setup({ lifetime: 300 });
      expect((await up.request("lib/app", "manifests/latest")).status).toBe(200);
      expect(tokenRequests()).toHaveLength(1);

      advance(200_000); // 200 s of a 300 s token
      const before = reg.requests.length;
      expect((await up.request("lib/app", "manifests/v2")).status).toBe(200);
      expect(tokenRequests()).toHaveLength(1);
      expect(reg.requests.length - before).toBe(1); // token sent up front: one exchange, no 401
      expect(reg.requests.at(-1)!.headers.authorization).toBe("Bearer T1");

      advance(200_000); // now past expiry
      expect((await up.request("lib/app", "manifests/v3")).status).toBe(200);
      expect(tokenRequests()).toHaveLength(2);
      expect(reg.requests.at(-1)!.headers.authorization).toBe("Bearer T2");
    });

    it("shares one token request among concurrent first requests", async () => {
      const N = 8;
      let release!: () => void;
      const held = new Promise<void>((resolve) => (release = resolve));
      let challenged = 0;
      const { reg, up, tokenRequests } = await setup({
        // Hold the token answer until every request has been challenged (or 5 s passed).
        holdTokens: () => Promise.race([held, new Promise<void>((r) => setTimeout(r, 5000))]),
      });
      const onReq = () => {
        const unauth = reg.requests.filter((r) => !r.url.startsWith("/token") && !r.headers.authorization).length;
        if (unauth !== challenged) {
          challenged = unauth;
          if (challenged >= N) setTimeout(release, 50); // let every client take in its 401 first
        }
      };
      const timer = setInterval(onReq, 5);
      try {
        const results = await Promise.all(Array.from({ length: N }, (_, i) => up.request("lib/app", `manifests/t${i}`)));
        expect(results.map((r) => r.status)).toEqual(Array(N).fill(200));
      } finally {
        clearInterval(timer);
      }
      expect(challenged).toBe(N);
      expect(tokenRequests()).toHaveLength(1);
    });

    it("shares one token refresh among concurrent requests after expiry", async () => {
      const { up, tokenRequests, advance } = await setup({ lifetime: 60 });
      expect((await up.request("lib/app", "manifests/latest")).status).toBe(200);
      advance(3_600_000);
      const results = await Promise.all(Array.from({ length: 10 }, (_, i) => up.request("lib/app", `manifests/t${i}`)));
      expect(results.map((r) => r.status)).toEqual(Array(10).fill(200));
      expect(tokenRequests()).toHaveLength(2);
    });

    it("keeps one token per repository scope", async () => {
      const { auth, up, tokenRequests } = await setup({ tokenHost: "other" });
      expect((await up.request("lib/app", "manifests/latest")).status).toBe(200);
      expect((await up.request("lib/other", "manifests/latest")).status).toBe(200);
      expect((await up.request("lib/app", "manifests/v2")).status).toBe(200);
      expect((await up.request("lib/other", "manifests/v2")).status).toBe(200);
      const scopes = tokenRequests().map((r) => new URL(r.url, auth.url).searchParams.getAll("scope"));
      expect(scopes).toEqual([[SCOPE], ["repository:lib/other:pull"]]);
    });

    it("replaces a cached token the registry stopped accepting", async () => {
      const { reg, up, tokenRequests, issued } = await setup({ lifetime: 3600 });
      expect((await up.request("lib/app", "manifests/latest")).status).toBe(200);
      expect(issued()).toBe(1);
      revoked.add("T1");
      const res = await up.request("lib/app", "manifests/latest");
      expect(res.status).toBe(200);
      expect(tokenRequests()).toHaveLength(2);
      expect(reg.requests.at(-1)!.headers.authorization).toBe("Bearer T2");
    });

    it("reports refused credentials at the token service as DENIED", async () => {
      const reg = await server((req, res) => {
        if (req.url?.startsWith("/token")) return send(res, 401, "");
        send(res, 401, "", { "WWW-Authenticate": `Bearer realm="http://${req.headers.host}/token",service="s"` });
      });
      const up = new Upstream({ url: reg.url, credentials: { username: "x", password: "wrong" } });
      const err = await up.request("a", "manifests/latest").then(() => null, (e: unknown) => e);
      expect(err).toBeInstanceOf(OciError);
      expect((err as OciError).code).toBe("DENIED");
    });
  });

  it("refuses a token realm on a host that is not allowed, without contacting it", async () => {
    const evil = await forbidden();
    const reg = await server((_req, res) =>
      send(res, 401, "", { "WWW-Authenticate": `Bearer realm="${evil.url}/token",service="s",scope="repository:a:pull"` }),
    );
    const up = new Upstream({ url: reg.url, credentials: { username: "u", password: "p" } });
    for (let i = 0; i < 2; i++) {
      const err = await up.request("a", "manifests/latest").then(() => null, (e: unknown) => e);
      expect(err).toBeInstanceOf(OciError);
      expect((err as OciError).code).toBe("UNAVAILABLE");
      expect((err as Error).message).toMatch(/not allowed/);
    }
    expect(evil.connections()).toBe(0);
  });
});

describe("Upstream: redirects", () => {
  it("follows a redirect to an allowed storage host without the Authorization header", async () => {
    const storage = await server((req, res) => send(res, 200, `blob via ${req.url}`));
    const reg = await server((req, res) => {
      if (req.headers.authorization !== basic("u", "p")) return send(res, 401, "", { "WWW-Authenticate": 'Basic realm="r"' });
      send(res, 307, "", { Location: `${storage.url}/signed/blob?sig=abc` });
    });
    const up = new Upstream({ url: reg.url, credentials: { username: "u", password: "p" }, allowHosts: [storage.host] });
    const res = await up.request("a", "blobs/sha256:00");
    expect(res.status).toBe(200);
    expect(await res.text()).toBe("blob via /signed/blob?sig=abc");
    expect(storage.requests).toHaveLength(1);
    expect(storage.requests[0]!.headers.authorization).toBeUndefined();
    expect(storage.requests[0]!.headers["accept-encoding"]).toBe("identity");
  });

  it("fetches an anonymous token for a redirect target that asks for one, and uses it only there", async () => {
    // registry.k8s.io's shape: the registry redirects to another registry with its own token service.
    const tokens = await server((req, res) => send(res, 200, JSON.stringify({ token: `t-for-${new URL(req.url!, "http://x").searchParams.get("scope")}` })));
    const mirror = await server((req, res) => {
      if (req.headers.authorization !== "Bearer t-for-repository:images/app:pull") {
        return send(res, 401, "", { "WWW-Authenticate": `Bearer realm="${tokens.url}/token",service="mirror",scope="repository:images/app:pull"` });
      }
      send(res, 200, "manifest");
    });
    const reg = await server((req, res) => {
      if (req.headers.authorization !== basic("u", "p")) return send(res, 401, "", { "WWW-Authenticate": 'Basic realm="r"' });
      send(res, 307, "", { Location: `${mirror.url}/v2/images/app/manifests/v1` });
    });
    const up = new Upstream({ url: reg.url, credentials: { username: "u", password: "p" }, allowHosts: [mirror.host, tokens.host] });
    const res = await up.request("app", "manifests/v1");
    expect(res.status).toBe(200);
    expect(await res.text()).toBe("manifest");
    // The registry's own credentials never reach the other host or its token service.
    expect(tokens.requests.map((r) => r.headers.authorization ?? null)).toEqual([null]);
    expect(mirror.requests.map((r) => r.headers.authorization ?? null)).toEqual([null, "Bearer t-for-repository:images/app:pull"]);
    // The token is cached: a second request costs no new token.
    expect((await up.request("app", "manifests/v1")).status).toBe(200);
    expect(tokens.requests).toHaveLength(1);
  });

  it("keeps the Authorization header on a redirect within the registry's own origin", async () => {
    const reg = await server((req, res) => {
      if (req.headers.authorization !== basic("u", "p")) return send(res, 401, "", { "WWW-Authenticate": 'Basic realm="r"' });
      if (req.url === "/moved") return send(res, 200, "moved ok");
      send(res, 302, "", { Location: "/moved" });
    });
    const up = new Upstream({ url: reg.url, credentials: { username: "u", password: "p" } });
    const res = await up.request("a", "blobs/sha256:00");
    expect(res.status).toBe(200);
    expect(await res.text()).toBe("moved ok");
    expect(reg.requests.at(-1)!.url).toBe("/moved");
  });

  it("refuses a redirect to a host that is not allowed, without contacting it", async () => {
    const evil = await forbidden();
    const reg = await server((_req, res) => send(res, 307, "", { Location: `${evil.url}/steal` }));
    const up = new Upstream({ url: reg.url, credentials: { username: "u", password: "p" } });
    const err = await up.request("a", "blobs/sha256:00").then(() => null, (e: unknown) => e);
    expect(err).toBeInstanceOf(OciError);
    expect((err as Error).message).toMatch(/not allowed/);
    expect(evil.connections()).toBe(0);
  });

  it("treats another port on the registry's hostname as another host", async () => {
    const other = await server((_req, res) => send(res, 200, "other port"));
    const reg = await server((_req, res) => send(res, 307, "", { Location: `${other.url}/x` }));
    const up = new Upstream({ url: reg.url });
    await expect(up.request("a", "blobs/sha256:00")).rejects.toThrow(/not allowed/);
    expect(other.connections()).toBe(0);
  });

  it("refuses a downgrade from https to http even to an allowed host", async () => {
    const calls: string[] = [];
    const fakeFetch = (async (input: URL | RequestInfo) => {
      calls.push(String(input));
      return new Response(null, { status: 307, headers: { Location: "http://storage.example/blob" } });
    }) as typeof fetch;
    const up = new Upstream({ url: "https://registry.example", allowHosts: ["storage.example"], fetch: fakeFetch });
    await expect(up.request("a", "blobs/sha256:00")).rejects.toThrow(OciError);
    expect(calls).toEqual(["https://registry.example/v2/a/blobs/sha256:00"]);
    expect(up.isAllowed(new URL("https://storage.example/blob"))).toBe(true);
    expect(up.isAllowed(new URL("http://storage.example/blob"))).toBe(false);
  });

  it("matches wildcard allow entries on subdomains only, and never other schemes", () => {
    const up = new Upstream({ url: "https://registry.example", allowHosts: ["*.cdn.example"] });
    expect(up.isAllowed(new URL("https://eu.cdn.example/x"))).toBe(true);
    expect(up.isAllowed(new URL("https://a.b.cdn.example/x"))).toBe(true);
    expect(up.isAllowed(new URL("https://cdn.example/x"))).toBe(false);
    expect(up.isAllowed(new URL("https://evilcdn.example/x"))).toBe(false);
    expect(up.isAllowed(new URL("https://eu.cdn.example:8443/x"))).toBe(false);
    expect(up.isAllowed(new URL("ftp://eu.cdn.example/x"))).toBe(false);
    expect(up.isAllowed(new URL("https://registry.example/v2/"))).toBe(true);
  });

  it("gives up after a bounded number of redirects", async () => {
    const reg = await server((req, res) => send(res, 302, "", { Location: `/loop/${reg.requests.length}` }));
    const up = new Upstream({ url: reg.url });
    const err = await up.request("a", "blobs/sha256:00").then(() => null, (e: unknown) => e);
    expect(err).toBeInstanceOf(OciError);
    expect((err as Error).message).toMatch(/redirected more than/);
    expect(reg.requests.length).toBeGreaterThan(2);
    expect(reg.requests.length).toBeLessThanOrEqual(11);
  });
});

describe("Upstream: failures and bookkeeping", () => {
  it("reports a refused connection as UpstreamUnreachable", async () => {
    const gone = await listen();
    await gone.close();
    const exchanges: (number | "error")[] = [];
    const up = new Upstream({ url: gone.url, onExchange: (s) => exchanges.push(s) });
    const err = await up.request("a", "manifests/latest").then(() => null, (e: unknown) => e);
    expect(err).toBeInstanceOf(UpstreamUnreachable);
    expect((err as Error).message).toContain(gone.host);
    expect(exchanges).toEqual(["error"]);
  });

  it("reports every exchange, token and redirect hops included", async () => {
    const storage = await server((_req, res) => send(res, 200, "bytes"));
    const reg = await server((req, res) => {
      if (req.url?.startsWith("/token")) return send(res, 200, JSON.stringify({ access_token: "A" }));
      if (req.headers.authorization !== "Bearer A") {
        return send(res, 401, "", { "WWW-Authenticate": `Bearer realm="http://${req.headers.host}/token"` });
      }
      send(res, 307, "", { Location: `${storage.url}/b` });
    });
    const exchanges: (number | "error")[] = [];
    const up = new Upstream({ url: reg.url, allowHosts: [storage.host], onExchange: (s) => exchanges.push(s) });
    const res = await up.request("a", "blobs/sha256:00");
    expect(await res.text()).toBe("bytes");
    expect(exchanges).toEqual([401, 200, 307, 200]);
    // Anonymous token request: no credentials configured, so none sent.
    expect(paths(reg, "/token")[0]!.headers.authorization).toBeUndefined();
  });

  it("accepts only a bare http(s) origin", () => {
    expect(() => new Upstream({ url: "ftp://registry.example" } as UpstreamOptions)).toThrow();
    expect(() => new Upstream({ url: "https://registry.example/v2" })).toThrow();
    expect(() => new Upstream({ url: "https://user:pw@registry.example" })).toThrow();
    expect(new Upstream({ url: "https://Registry.Example:5000/" }).host).toBe("registry.example:5000");
  });
});
