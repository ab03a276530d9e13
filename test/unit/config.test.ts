// The JSON config (docs/configuration.md): presets, defaults, secrets and their sources, environment
// overrides, the refusals that stop `skiff serve`, and how the Upstreams router maps client names.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { ConfigError, resolveConfig, upstreamEnvName, type ConfigEnvironment, type SkiffConfig, type UpstreamConfig } from "../../src/config/config.ts";
import { OciError } from "../../src/oci/errors.ts";
import { Upstream } from "../../src/oci/upstream.ts";
import { Upstreams } from "../../src/oci/upstreams.ts";
import { FakeRegistry, dispatchByOrigin } from "./fakes.ts";

const dir = mkdtempSync(join(tmpdir(), "skiff-config-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const readFile = (p: string) => readFileSync(p, "utf8");

function secretFile(name: string, content: string): string {
  const path = join(dir, name);
  writeFileSync(path, content);
  return path;
}

function upstream(config: SkiffConfig, prefix: string): UpstreamConfig {
  const u = config.upstreams.find((x) => x.prefix === prefix);
  if (!u) throw new Error(`no upstream ${prefix}`);
  return u;
}

/** The ConfigError resolveConfig throws (failing the test when it throws nothing or something else). */
function configError(raw: unknown, environment: ConfigEnvironment = {}): ConfigError {
  try {
    resolveConfig(raw, environment);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return err as ConfigError;
  }
  throw new Error(`resolveConfig accepted ${JSON.stringify(raw)}`);
}

const SECRET32 = "0123456789abcdef0123456789abcdef";

describe("resolveConfig: upstreams and presets", () => {
  it("fills a preset from its prefix: docker.io", () => {
    const c = resolveConfig({ upstreams: { "docker.io": {} } });
    const d = upstream(c, "docker.io");
    expect(d.url).toBe("https://registry-1.docker.io");
    expect(d.allowHosts).toEqual(expect.arrayContaining(["auth.docker.io", "production.cloudflare.docker.com", "*.r2.cloudflarestorage.com"]));
    expect(d.namespaces).toEqual(expect.arrayContaining(["docker.io", "index.docker.io", "registry-1.docker.io"]));
    expect(d.upstreamName("alpine")).toBe("library/alpine");
    expect(d.upstreamName("bitnami/redis")).toBe("bitnami/redis");
    expect(d.public).toBe(true);
    expect(d.credentials).toBeUndefined();
    expect(d.tagTtlSeconds).toBe(60);
  });

  it("fills the other presets", () => {
    const c = resolveConfig({ upstreams: { "ghcr.io": {}, "quay.io": {}, "registry.k8s.io": {} }, defaultUpstream: "ghcr.io" });
    expect(upstream(c, "ghcr.io")).toMatchObject({ url: "https://ghcr.io", allowHosts: ["pkg-containers.githubusercontent.com"] });
    expect(upstream(c, "ghcr.io").upstreamName("app")).toBe("app");
    expect(upstream(c, "quay.io").allowHosts).toContain("cdn.quay.io");
    expect(upstream(c, "registry.k8s.io").namespaces).toEqual(expect.arrayContaining(["registry.k8s.io", "k8s.gcr.io"]));
    expect(upstream(c, "registry.k8s.io").allowHosts).toEqual(expect.arrayContaining(["*.pkg.dev", "*.amazonaws.com"]));
  });

  it("takes a preset under a custom prefix, with the prefix as an extra namespace", () => {
    const c = resolveConfig({ upstreams: { hub: { preset: "docker.io", allowHosts: ["mirror.example:8443"], namespaces: ["Hub.Example"] } } });
    const h = upstream(c, "hub");
    expect(h.url).toBe("https://registry-1.docker.io");
    expect(h.upstreamName("alpine")).toBe("library/alpine");
    expect(h.namespaces).toEqual(expect.arrayContaining(["hub", "docker.io", "index.docker.io", "registry-1.docker.io", "hub.example"]));
    expect(h.allowHosts).toEqual(expect.arrayContaining(["auth.docker.io", "mirror.example:8443"]));
  });

  it("lets url override a preset's URL and keeps the rest of the preset", () => {
    const c = resolveConfig({ upstreams: { "docker.io": { url: "https://hub-cache.example:5000/" } } });
    const d = upstream(c, "docker.io");
    expect(d.url).toBe("https://hub-cache.example:5000");
    expect(d.namespaces).toEqual(expect.arrayContaining(["docker.io", "hub-cache.example:5000"]));
    expect(d.upstreamName("alpine")).toBe("library/alpine");
  });

  it("refuses an unknown preset and an upstream with neither url nor preset", () => {
    expect(configError({ upstreams: { x: { preset: "gcr.io" } } }).message).toMatch(/^upstreams\.x\.preset: unknown preset/);
    expect(configError({ upstreams: { corp: {} } }).message).toMatch(/^upstreams\.corp: give a url/);
  });

  it("uses tagTtl, else the environment's default tag TTL", () => {
    const c = resolveConfig({ upstreams: { a: { url: "https://a.example", tagTtl: 5 }, b: { url: "https://b.example" } } }, { defaultTagTtlSeconds: 17 });
    expect(upstream(c, "a").tagTtlSeconds).toBe(5);
    expect(upstream(c, "b").tagTtlSeconds).toBe(17);
    expect(configError({ upstreams: { a: { url: "https://a.example", tagTtl: -1 } } }).message).toMatch(/^upstreams\.a\.tagTtl:/);
    expect(configError({ upstreams: { a: { url: "https://a.example", tagTtl: 1.5 } } }).message).toMatch(/^upstreams\.a\.tagTtl:/);
  });

  it("reads a CA bundle and refuses a file without a certificate", () => {
    const pem = secretFile("ca.pem", "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n");
    const c = resolveConfig({ upstreams: { a: { url: "https://a.example", ca: pem } } }, { readFile });
    expect(upstream(c, "a").ca).toContain("BEGIN CERTIFICATE");
    const junk = secretFile("junk.pem", "hello");
    expect(configError({ upstreams: { a: { url: "https://a.example", ca: junk } } }, { readFile }).message).toMatch(/^upstreams\.a\.ca:/);
    expect(configError({ upstreams: { a: { url: "https://a.example", ca: pem } } }).message).toMatch(/^upstreams\.a\.ca:/);
  });
});

describe("resolveConfig: default upstream", () => {
  const two = { a: { url: "https://a.example" }, b: { url: "https://b.example" } };

  it("takes an explicit defaultUpstream", () => {
    expect(resolveConfig({ upstreams: two, defaultUpstream: "b" }).defaultUpstream).toBe("b");
  });

  it("defaults to the only upstream", () => {
    expect(resolveConfig({ upstreams: { a: { url: "https://a.example" } } }).defaultUpstream).toBe("a");
  });

  it("has none with two upstreams and no defaultUpstream", () => {
    expect(resolveConfig({ upstreams: two }).defaultUpstream).toBeUndefined();
  });

  it("refuses a defaultUpstream that is not an upstream", () => {
    expect(configError({ upstreams: two, defaultUpstream: "c" }).message).toMatch(/^defaultUpstream: "c" is not one of the upstreams/);
  });

  it("refuses an empty upstreams map", () => {
    expect(configError({ upstreams: {} }).message).toMatch(/^upstreams:/);
    expect(configError({}).message).toMatch(/^upstreams: must be an object/);
  });
});

describe("resolveConfig: public and access modes", () => {
  const creds = { username: "bot", password: "upstream-pass" };

  it("makes an upstream public by default only without credentials", () => {
    const c = resolveConfig({
      upstreams: { a: { url: "https://a.example" }, b: { url: "https://b.example", credentials: creds }, c: { url: "https://c.example", credentials: creds, public: true } },
      access: { mode: "passthrough" },
    });
    expect(upstream(c, "a").public).toBe(true);
    expect(upstream(c, "b").public).toBe(false);
    expect(upstream(c, "c").public).toBe(true);
    expect(upstream(c, "b").credentials).toEqual({ username: "bot", password: "upstream-pass" });
  });

  it("defaults to open mode with the documented TTLs", () => {
    const { access } = resolveConfig({ upstreams: { a: { url: "https://a.example" } } });
    expect(access).toMatchObject({ mode: "open", tokenTtlSeconds: 300, decisionTtlSeconds: 60, tokenSecret: undefined, realm: undefined });
    expect(access.users.size).toBe(0);
    expect(access.tokens).toEqual([]);
  });

  it("refuses open mode with an upstream that is not public, naming it", () => {
    const err = configError({ upstreams: { pub: { url: "https://a.example" }, corp: { url: "https://b.example", credentials: creds } } });
    expect(err.message).toMatch(/^upstreams\.corp: not public/);
    expect(err.message).not.toContain("upstream-pass");
    // Explicitly public is fine in open mode.
    expect(resolveConfig({ upstreams: { corp: { url: "https://b.example", credentials: creds, public: true } } }).access.mode).toBe("open");
  });

  it("refuses credentials mode without users or tokens", () => {
    expect(configError({ upstreams: { a: { url: "https://a.example" } }, access: { mode: "credentials" } }).message).toMatch(/^access: mode "credentials" needs/);
    expect(configError({ upstreams: { a: { url: "https://a.example" } }, access: { mode: "credentials", users: [] } }).message).toMatch(/^access:/);
  });

  it("refuses an unknown mode", () => {
    expect(configError({ upstreams: { a: { url: "https://a.example" } }, access: { mode: "closed" } }).message).toMatch(/^access\.mode: must be one of open, credentials, passthrough/);
  });

  it("reads users, tokens, tokenTtl, decisionTtl and realm", () => {
    const { access } = resolveConfig({
      upstreams: { a: { url: "https://a.example" } },
      access: {
        mode: "credentials",
        users: [{ username: "ci", password: "ci-pass" }],
        tokens: [{ name: "agents", token: "static-token-0123456789" }, { token: "another-static-token-xyz" }],
        tokenTtl: 120,
        decisionTtl: 0,
        realm: "https://mirror.example/_skiff/token",
        tokenSecret: SECRET32,
      },
    });
    expect(access.users.get("ci")).toMatchObject({ label: "user ci", secret: "ci-pass" });
    expect(access.tokens.map((t) => [t.label, t.secret])).toEqual([
      ["token agents", "static-token-0123456789"],
      ["token 1", "another-static-token-xyz"],
    ]);
    expect(access).toMatchObject({ tokenTtlSeconds: 120, decisionTtlSeconds: 0, realm: "https://mirror.example/_skiff/token", tokenSecret: SECRET32 });
  });

  it("refuses bad users and tokens", () => {
    const up = { a: { url: "https://a.example" } };
    const dup = { mode: "credentials", users: [{ username: "ci", password: "p1" }, { username: "ci", password: "p2" }] };
    expect(configError({ upstreams: up, access: dup }).message).toMatch(/^access\.users\[1\]\.username: user "ci" is listed twice/);
    expect(configError({ upstreams: up, access: { mode: "credentials", users: [{ username: "a:b", password: "p" }] } }).message).toMatch(/^access\.users\[0\]\.username:/);
    expect(configError({ upstreams: up, access: { mode: "credentials", users: [{ password: "p" }] } }).message).toMatch(/^access\.users\[0\]\.username: is required/);
    expect(configError({ upstreams: up, access: { mode: "credentials", tokens: [{ token: "short" }] } }).message).toMatch(/^access\.tokens\[0\]\.token: must be at least 16/);
    expect(configError({ upstreams: up, access: { realm: "/_skiff/token" } }).message).toMatch(/^access\.realm:/);
    expect(configError({ upstreams: up, access: { tokenTtl: 5 } }).message).toMatch(/^access\.tokenTtl:/);
  });
});

describe("resolveConfig: secrets", () => {
  const up = { a: { url: "https://a.example" } };
  const user = (fields: Record<string, unknown>) => ({ upstreams: up, access: { mode: "credentials", users: [{ username: "ci", ...fields }] } });

  it("takes a password inline", () => {
    expect(resolveConfig(user({ password: "inline-pass" })).access.users.get("ci")?.secret).toBe("inline-pass");
  });

  it("takes a password from the environment", () => {
    const c = resolveConfig(user({ passwordEnv: "CI_PASS" }), { env: { CI_PASS: "env-pass" } });
    expect(c.access.users.get("ci")?.secret).toBe("env-pass");
    expect(configError(user({ passwordEnv: "CI_PASS" }), { env: {} }).message).toBe("access.users[0].passwordEnv: environment variable CI_PASS is not set");
    expect(configError(user({ passwordEnv: "CI_PASS" }), { env: { CI_PASS: "" } }).message).toMatch(/^access\.users\[0\]\.passwordEnv:/);
  });

  it("takes a password from a file, without its trailing newline", () => {
    const lf = secretFile("pass-lf", "file-pass\n");
    const crlf = secretFile("pass-crlf", "file-pass\r\n");
    const bare = secretFile("pass-bare", "file-pass");
    for (const path of [lf, crlf, bare]) {
      expect(resolveConfig(user({ passwordFile: path }), { readFile }).access.users.get("ci")?.secret).toBe("file-pass");
    }
    // Only one newline is the file's end; inner content is kept as written.
    const two = secretFile("pass-two", "file-pass\n\n");
    expect(resolveConfig(user({ passwordFile: two }), { readFile }).access.users.get("ci")?.secret).toBe("file-pass\n");
  });

  it("refuses an empty, missing or unreadable secret file", () => {
    const empty = secretFile("empty", "\n");
    expect(configError(user({ passwordFile: empty }), { readFile }).message).toBe("access.users[0].passwordFile: the file is empty");
    expect(configError(user({ passwordFile: join(dir, "missing") }), { readFile }).message).toBe("access.users[0].passwordFile: can't read the file it names: ENOENT");
    expect(configError(user({ passwordFile: empty })).message).toMatch(/^access\.users\[0\]\.passwordFile: files can't be read/);
  });

  it("requires exactly one of password, passwordEnv, passwordFile", () => {
    const f = secretFile("pass-x", "x");
    const expected = "access.users[0]: give exactly one of password, passwordEnv, passwordFile";
    expect(configError(user({})).message).toBe(expected);
    expect(configError(user({ password: "p", passwordEnv: "P" }), { env: { P: "p" } }).message).toBe(expected);
    expect(configError(user({ password: "p", passwordFile: f }), { readFile }).message).toBe(expected);
    expect(configError(user({ password: "p", passwordEnv: "P", passwordFile: f }), { env: { P: "p" }, readFile }).message).toBe(expected);
    expect(configError(user({ password: 42 })).message).toBe("access.users[0].password: must be a non-empty string");
  });

  it("applies the same rule to upstream credentials, tokens and the token secret", () => {
    const noPassword = { upstreams: { a: { url: "https://a.example", credentials: { username: "bot" } } }, access: { mode: "passthrough" } };
    expect(configError(noPassword).message).toBe("upstreams.a.credentials: give exactly one of password, passwordEnv, passwordFile");
    const tokenBoth = { upstreams: up, access: { mode: "credentials", tokens: [{ token: "static-token-0123456789", tokenEnv: "T" }] } };
    expect(configError(tokenBoth, { env: { T: "x" } }).message).toBe("access.tokens[0]: give exactly one of token, tokenEnv, tokenFile");
    const secretBoth = { upstreams: up, access: { tokenSecret: SECRET32, tokenSecretEnv: "S" } };
    expect(configError(secretBoth, { env: { S: SECRET32 } }).message).toBe("access: give exactly one of tokenSecret, tokenSecretEnv, tokenSecretFile");
  });

  it("reads tokens and the token secret from the environment and files", () => {
    const tokenFile = secretFile("token", "static-token-from-a-file\n");
    const secretPath = secretFile("secret", `${SECRET32}\n`);
    const c = resolveConfig(
      { upstreams: up, access: { mode: "credentials", tokens: [{ tokenFile }, { tokenEnv: "T" }], tokenSecretFile: secretPath } },
      { env: { T: "static-token-from-env-var" }, readFile },
    );
    expect(c.access.tokens.map((t) => t.secret)).toEqual(["static-token-from-a-file", "static-token-from-env-var"]);
    expect(c.access.tokenSecret).toBe(SECRET32);
  });

  it("refuses a token secret shorter than 32 bytes", () => {
    expect(configError({ upstreams: up, access: { tokenSecret: "x".repeat(31) } }).message).toBe("access.tokenSecret: must be at least 32 bytes");
    // Bytes, not characters: 16 two-byte characters are 32 bytes.
    expect(resolveConfig({ upstreams: up, access: { tokenSecret: "é".repeat(16) } }).access.tokenSecret).toBe("é".repeat(16));
    expect(configError({ upstreams: up }, { env: { SKIFF_TOKEN_SECRET: "too-short" } }).message).toMatch(/^access\.tokenSecret: must be at least 32 bytes/);
  });
});

describe("resolveConfig: environment overrides", () => {
  const up = { a: { url: "https://a.example" }, b: { url: "https://b.example" } };

  it("names upstream variables after the upper-cased prefix", () => {
    expect(upstreamEnvName("ghcr.io")).toBe("SKIFF_UPSTREAM_GHCR_IO");
    expect(upstreamEnvName("registry.k8s.io")).toBe("SKIFF_UPSTREAM_REGISTRY_K8S_IO");
    expect(upstreamEnvName("my-corp_2")).toBe("SKIFF_UPSTREAM_MY_CORP_2");
  });

  it("overrides access.mode", () => {
    const raw = { upstreams: up, access: { mode: "credentials", users: [{ username: "ci", password: "p" }] } };
    expect(resolveConfig(raw, { env: { SKIFF_ACCESS_MODE: "passthrough" } }).access.mode).toBe("passthrough");
    expect(resolveConfig({ upstreams: up }, { env: { SKIFF_ACCESS_MODE: "passthrough" } }).access.mode).toBe("passthrough");
    expect(configError({ upstreams: up }, { env: { SKIFF_ACCESS_MODE: "credentials" } }).message).toMatch(/^access: mode "credentials" needs/);
    expect(configError({ upstreams: up }, { env: { SKIFF_ACCESS_MODE: "nope" } }).message).toMatch(/^access\.mode:/);
  });

  it("overrides defaultUpstream", () => {
    expect(resolveConfig({ upstreams: up, defaultUpstream: "a" }, { env: { SKIFF_DEFAULT_UPSTREAM: "b" } }).defaultUpstream).toBe("b");
    expect(resolveConfig({ upstreams: up }, { env: { SKIFF_DEFAULT_UPSTREAM: "a" } }).defaultUpstream).toBe("a");
    expect(configError({ upstreams: up }, { env: { SKIFF_DEFAULT_UPSTREAM: "z" } }).message).toMatch(/^defaultUpstream:/);
  });

  it("overrides the token secret", () => {
    const other = "fedcba9876543210fedcba9876543210";
    expect(resolveConfig({ upstreams: up, access: { tokenSecret: SECRET32 } }, { env: { SKIFF_TOKEN_SECRET: other } }).access.tokenSecret).toBe(other);
    expect(resolveConfig({ upstreams: up }, { env: { SKIFF_TOKEN_SECRET: other } }).access.tokenSecret).toBe(other);
  });

  it("overrides and adds upstream credentials", () => {
    const env = {
      [`${upstreamEnvName("ghcr.io")}_USERNAME`]: "env-user",
      [`${upstreamEnvName("ghcr.io")}_PASSWORD`]: "env-pass",
      SKIFF_UPSTREAM_CORP_PASSWORD: "corp-env-pass",
    };
    const c = resolveConfig(
      {
        upstreams: {
          "ghcr.io": { credentials: { username: "file-user", password: "file-pass" } },
          corp: { url: "https://corp.example", credentials: { username: "corp-user", passwordEnv: "UNSET_VARIABLE" } },
        },
        access: { mode: "passthrough" },
      },
      { env },
    );
    expect(upstream(c, "ghcr.io").credentials).toEqual({ username: "env-user", password: "env-pass" });
    expect(upstream(c, "corp").credentials).toEqual({ username: "corp-user", password: "corp-env-pass" });
  });

  it("gives an upstream credentials from the environment alone, which makes it non-public", () => {
    const env = { SKIFF_UPSTREAM_GHCR_IO_USERNAME: "u", SKIFF_UPSTREAM_GHCR_IO_PASSWORD: "env-only-pass" };
    const c = resolveConfig({ upstreams: { "ghcr.io": {} }, access: { mode: "passthrough" } }, { env });
    expect(upstream(c, "ghcr.io")).toMatchObject({ credentials: { username: "u", password: "env-only-pass" }, public: false });
    expect(configError({ upstreams: { "ghcr.io": {} } }, { env }).message).toMatch(/^upstreams\.ghcr\.io: not public/);
  });

  it("refuses half a credential from the environment", () => {
    const err = configError({ upstreams: { "ghcr.io": {} }, access: { mode: "passthrough" } }, { env: { SKIFF_UPSTREAM_GHCR_IO_PASSWORD: "lonely-pass" } });
    expect(err.message).toMatch(/^upstreams\.ghcr\.io\.credentials: a username needs a password/);
    expect(err.message).toContain("SKIFF_UPSTREAM_GHCR_IO_USERNAME");
    expect(err.message).not.toContain("lonely-pass");
  });
});

describe("resolveConfig: review fixes", () => {
  it("still checks the form of a credentials block whose password the environment overrides", () => {
    const raw = { upstreams: { corp: { url: "https://c.example", credentials: { username: "u", password: "a", passwordEnv: "B" } } }, access: { mode: "passthrough" } };
    expect(configError(raw, { env: { SKIFF_UPSTREAM_CORP_PASSWORD: "env-pass" } }).message).toBe("upstreams.corp.credentials: give exactly one of password, passwordEnv, passwordFile");
    const secret = { upstreams: { a: { url: "https://a.example" } }, access: { tokenSecret: SECRET32, tokenSecretEnv: "X" } };
    expect(configError(secret, { env: { SKIFF_TOKEN_SECRET: SECRET32 } }).message).toBe("access: give exactly one of tokenSecret, tokenSecretEnv, tokenSecretFile");
  });

  it("treats an empty environment password as unset", () => {
    const c = resolveConfig({ upstreams: { corp: { url: "https://c.example" } } }, { env: { SKIFF_UPSTREAM_CORP_PASSWORD: "" } });
    expect(upstream(c, "corp").credentials).toBeUndefined();
  });

  it("does not echo a secret pasted where a variable name belongs", () => {
    const err = configError({ upstreams: { a: { url: "https://a.example" } }, access: { mode: "credentials", users: [{ username: "u", passwordEnv: "hunter2 pass!" }] } });
    expect(err.message).toBe("access.users[0].passwordEnv: the environment variable it names is not set");
    const named = configError({ upstreams: { a: { url: "https://a.example" } }, access: { mode: "credentials", users: [{ username: "u", passwordEnv: "CI_PASSWORD" }] } });
    expect(named.message).toBe("access.users[0].passwordEnv: environment variable CI_PASSWORD is not set");
  });

  it("says why an upstream without credentials is not public", () => {
    expect(configError({ upstreams: { a: { url: "https://a.example", public: false } } }).message).toMatch(/^upstreams\.a: not public, and access mode "open"/);
  });

  it("refuses an allowHosts port above 65535", () => {
    expect(configError({ upstreams: { a: { url: "https://a.example", allowHosts: ["s.example:99999"] } } }).message).toMatch(/^upstreams\.a\.allowHosts\[0\]: not a host/);
    expect(resolveConfig({ upstreams: { a: { url: "https://a.example", allowHosts: ["s.example:65535"] } } }).upstreams[0]!.allowHosts).toContain("s.example:65535");
  });
});

describe("resolveConfig: refusals", () => {
  it("refuses unknown fields at every level, naming them", () => {
    expect(configError({ upstreams: { a: { url: "https://a.example" } }, extra: 1 }).message).toMatch(/^extra: unknown field/);
    expect(configError({ upstreams: { a: { url: "https://a.example", tls: true } } }).message).toMatch(/^upstreams\.a\.tls: unknown field/);
    expect(configError({ upstreams: { a: { url: "https://a.example", credentials: { username: "u", password: "p", token: "t" } } } }).message).toMatch(
      /^upstreams\.a\.credentials\.token: unknown field/,
    );
    expect(configError({ upstreams: { a: { url: "https://a.example" } }, access: { modes: "open" } }).message).toMatch(/^access\.modes: unknown field/);
    expect(configError({ upstreams: { a: { url: "https://a.example" } }, access: { users: [{ username: "u", password: "p", repos: [] }] } }).message).toMatch(
      /^access\.users\[0\]\.repos: unknown field/,
    );
    expect(configError({ upstreams: { a: { url: "https://a.example" } }, access: { tokens: [{ token: "static-token-0123456789", scope: "x" }] } }).message).toMatch(
      /^access\.tokens\[0\]\.scope: unknown field/,
    );
  });

  it("refuses wrong types", () => {
    expect(configError([]).message).toBe("must be an object");
    expect(configError({ upstreams: { a: "https://a.example" } }).message).toBe("upstreams.a: must be an object");
    expect(configError({ upstreams: { a: { url: "https://a.example", public: "yes" } } }).message).toBe("upstreams.a.public: must be true or false");
    expect(configError({ upstreams: { a: { url: "https://a.example", allowHosts: "x.example" } } }).message).toBe("upstreams.a.allowHosts: must be a list");
    expect(configError({ upstreams: { a: { url: 5 } } }).message).toBe("upstreams.a.url: must be a non-empty string");
  });

  it.each(["Corp", "a/b", "-corp", "corp-", "", "co rp", "_x", "a..b"])("refuses the prefix %j", (prefix) => {
    expect(configError({ upstreams: { [prefix]: { url: "https://a.example" } } }).message).toMatch(new RegExp(`^upstreams\\.${prefix.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&")}: a prefix is one repository-name component`));
  });

  it.each(["a", "a.b", "a_b", "a__b", "a-b", "a--b", "registry.k8s.io", "127.0.0.1"])("accepts the prefix %j", (prefix) => {
    expect(resolveConfig({ upstreams: { [prefix]: { url: "https://a.example" } } }).upstreams[0]!.prefix).toBe(prefix);
  });

  it.each([
    ["a path", "https://r.example/v2"],
    ["a query", "https://r.example/?x=1"],
    ["a fragment", "https://r.example/#x"],
    ["ftp", "ftp://r.example"],
    ["file", "file:///etc/passwd"],
  ])("refuses a url with %s", (_what, url) => {
    expect(configError({ upstreams: { a: { url } } }).message).toMatch(/^upstreams\.a\.url: must be a bare origin/);
  });

  it("refuses a url with user info, pointing at credentials", () => {
    expect(configError({ upstreams: { a: { url: "https://user@r.example" } } }).message).toBe("upstreams.a.url: must not hold credentials: put them in credentials");
  });

  it("refuses a url that is not one", () => {
    expect(configError({ upstreams: { a: { url: "r.example" } } }).message).toMatch(/^upstreams\.a\.url: not a URL/);
  });

  it("keeps http and a port", () => {
    expect(upstream(resolveConfig({ upstreams: { a: { url: "http://127.0.0.1:5000" } } }), "a").url).toBe("http://127.0.0.1:5000");
  });

  it.each(["https://storage.example", "storage.example/path", "*.*.example", "*.", "storage example", "host:99999999"])("refuses the allowHosts entry %j", (entry) => {
    const err = configError({ upstreams: { a: { url: "https://a.example", allowHosts: ["ok.example", entry] } } });
    expect(err.message).toMatch(/^upstreams\.a\.allowHosts\[1\]: not a host/);
  });

  it("accepts host, host:port, *.domain and bracketed IPv6 allowHosts entries", () => {
    const hosts = ["storage.example", "storage.example:8443", "*.cdn.example", "[::1]:5000"];
    expect(upstream(resolveConfig({ upstreams: { a: { url: "https://a.example", allowHosts: hosts } } }), "a").allowHosts).toEqual(hosts);
  });

  it("refuses a registry name served by two upstreams", () => {
    const viaHost = configError({ upstreams: { a: { url: "https://r.example" }, b: { url: "https://r.example" } } });
    expect(viaHost.message).toBe("upstreams.b: registry name r.example is already served by upstream a");
    const viaPreset = configError({ upstreams: { "docker.io": {}, hub: { preset: "docker.io" } } });
    expect(viaPreset.message).toMatch(/^upstreams\.hub: registry name (registry-1\.|index\.)?docker\.io is already served by upstream docker\.io$/);
    const viaNamespace = configError({ upstreams: { a: { url: "https://a.example", namespaces: ["B"] }, b: { url: "https://b.example" } } });
    expect(viaNamespace.message).toMatch(/^upstreams\.b: registry name b is already served by upstream a/);
  });
});

describe("resolveConfig: repository patterns", () => {
  function mayPull(repositories: unknown): (repository: string) => boolean {
    const c = resolveConfig({ upstreams: { corp: { url: "https://corp.example" } }, access: { mode: "credentials", users: [{ username: "u", password: "p", repositories }] } });
    return c.access.users.get("u")!.mayPull;
  }

  it("lets * match any run of characters including /", () => {
    const teamA = mayPull(["corp/team-a/*"]);
    expect(teamA("corp/team-a/x")).toBe(true);
    expect(teamA("corp/team-a/x/y")).toBe(true);
    expect(teamA("corp/team-b/x")).toBe(false);
    expect(teamA("corp/team-a")).toBe(false);
    expect(teamA("corp/team-ab/x")).toBe(false);
    expect(teamA("other/corp/team-a/x")).toBe(false);
  });

  it("matches . literally", () => {
    const hub = mayPull(["docker.io/*"]);
    expect(hub("docker.io/library/alpine")).toBe(true);
    expect(hub("dockerxio/library/alpine")).toBe(false);
  });

  it("allows everything with * and by default, and matches any of several patterns", () => {
    expect(mayPull(["*"])("anything/at/all")).toBe(true);
    const c = resolveConfig({ upstreams: { corp: { url: "https://corp.example" } }, access: { mode: "credentials", users: [{ username: "u", password: "p" }] } });
    expect(c.access.users.get("u")!.mayPull("corp/x")).toBe(true);
    const several = mayPull(["ghcr.io/org/*", "corp/app"]);
    expect(several("ghcr.io/org/a")).toBe(true);
    expect(several("corp/app")).toBe(true);
    expect(several("corp/app2")).toBe(false);
    expect(mayPull([])("corp/x")).toBe(false);
  });

  it.each(["Corp/*", "corp/[ab]", "corp/a?", "corp/a+", "corp/(x)", "corp/a b", "corp/a$"])("refuses the pattern %j", (pattern) => {
    const c = () => mayPull(["corp/*", pattern]);
    expect(c).toThrow(ConfigError);
    expect(c).toThrow(/^access\.users\[0\]\.repositories\[1\]:/);
  });
});

describe("resolveConfig: secrets never appear in errors", () => {
  const file = secretFile("leak-secret", "file-secret-4\n");
  const cases: [string, unknown, ConfigEnvironment][] = [
    ["open mode with a private upstream", { upstreams: { corp: { url: "https://c.example", credentials: { username: "u", password: "inline-secret-1" } } } }, {}],
    [
      "two password sources",
      { upstreams: { corp: { url: "https://c.example", credentials: { username: "u", password: "inline-secret-2", passwordFile: file } } }, access: { mode: "passthrough" } },
      { readFile },
    ],
    [
      "a bad field next to a password",
      { upstreams: { corp: { url: "https://c.example", credentials: { username: "u", password: "inline-secret-3" }, public: "no" } }, access: { mode: "passthrough" } },
      {},
    ],
    ["a short token", { upstreams: { a: { url: "https://a.example" } }, access: { mode: "credentials", tokens: [{ token: "tok-secret-5" }] } }, {}],
    ["a short token from a file", { upstreams: { a: { url: "https://a.example" } }, access: { mode: "credentials", tokens: [{ tokenFile: file }] } }, { readFile }],
    ["a short token secret", { upstreams: { a: { url: "https://a.example" } }, access: { tokenSecret: "short-secret-6" } }, {}],
    ["a short token secret from the environment", { upstreams: { a: { url: "https://a.example" } } }, { env: { SKIFF_TOKEN_SECRET: "short-env-secret-7" } }],
    ["a short token secret from a file", { upstreams: { a: { url: "https://a.example" } }, access: { tokenSecretFile: file } }, { readFile }],
    [
      "a user with a password and a bad pattern",
      { upstreams: { a: { url: "https://a.example" } }, access: { mode: "credentials", users: [{ username: "u", password: "user-secret-8", repositories: ["A*"] }] } },
      {},
    ],
    [
      "a user listed twice",
      { upstreams: { a: { url: "https://a.example" } }, access: { mode: "credentials", users: [{ username: "u", password: "user-secret-9" }, { username: "u", password: "user-secret-10" }] } },
      {},
    ],
    [
      "an environment password for an upstream without a username",
      { upstreams: { corp: { url: "https://c.example" } }, access: { mode: "passthrough" } },
      { env: { SKIFF_UPSTREAM_CORP_PASSWORD: "env-secret-11" } },
    ],
    [
      "an environment-provided private upstream in open mode",
      { upstreams: { corp: { url: "https://c.example" } } },
      { env: { SKIFF_UPSTREAM_CORP_USERNAME: "u", SKIFF_UPSTREAM_CORP_PASSWORD: "env-secret-12" } },
    ],
    [
      "a user password next to an unknown field",
      { upstreams: { a: { url: "https://a.example" } }, access: { mode: "credentials", users: [{ username: "u", password: "user-secret-13", role: "admin" }] } },
      {},
    ],
  ];
  const secrets = ["inline-secret-1", "inline-secret-2", "inline-secret-3", "file-secret-4", "tok-secret-5", "short-secret-6", "short-env-secret-7", "user-secret-8", "user-secret-9", "user-secret-10", "env-secret-11", "env-secret-12", "user-secret-13"];

  it.each(cases)("%s", (_what, raw, environment) => {
    const err = configError(raw, environment);
    for (const s of secrets) expect(err.message).not.toContain(s);
  });

  it("does not quote the password of a url with user info", () => {
    const err = configError({ upstreams: { a: { url: "https://bot:url-secret-14@r.example" } } });
    expect(err.message).toMatch(/^upstreams\.a\.url:/);
    expect(err.message).not.toContain("url-secret-14");
  });
});

describe("Upstreams router", () => {
  const one = new FakeRegistry("http://one.test");
  const two = new FakeRegistry("http://two.test");
  const dispatch = dispatchByOrigin(one, two);

  function router(raw: unknown): Upstreams {
    const c = resolveConfig(raw);
    return new Upstreams(c.upstreams, c.defaultUpstream, (u) => new Upstream({ url: u.url, allowHosts: u.allowHosts, fetch: dispatch }));
  }

  const raw = {
    upstreams: {
      "docker.io": { url: "http://one.test" },
      corp: { url: "http://two.test", namespaces: ["Registry.Corp.Example"] },
      "ghcr.io": {},
    },
    defaultUpstream: "docker.io",
  };

  function routeOf(r: Upstreams, name: string, ns?: string) {
    const route = r.route(name, ns);
    return { repository: route.repository, name: route.name, upstream: route.upstream.prefix };
  }

  function nameUnknown(f: () => unknown): OciError {
    try {
      f();
    } catch (err) {
      expect(err).toBeInstanceOf(OciError);
      expect((err as OciError).code).toBe("NAME_UNKNOWN");
      expect((err as OciError).status).toBe(404);
      return err as OciError;
    }
    throw new Error("no error");
  }

  it("routes ?ns= by prefix, URL host, preset names and namespaces, case-insensitively, with the name as sent", () => {
    const r = router(raw);
    expect(routeOf(r, "org/app", "corp")).toEqual({ repository: "corp/org/app", name: "org/app", upstream: "corp" });
    expect(routeOf(r, "org/app", "two.test")).toMatchObject({ upstream: "corp" });
    expect(routeOf(r, "org/app", "registry.corp.example")).toMatchObject({ upstream: "corp" });
    expect(routeOf(r, "org/app", "REGISTRY.Corp.EXAMPLE")).toMatchObject({ upstream: "corp" });
    expect(routeOf(r, "org/app", "ghcr.io")).toEqual({ repository: "ghcr.io/org/app", name: "org/app", upstream: "ghcr.io" });
    for (const ns of ["docker.io", "index.docker.io", "registry-1.docker.io", "one.test", "Docker.IO"]) {
      expect(routeOf(r, "library/alpine", ns)).toEqual({ repository: "docker.io/library/alpine", name: "library/alpine", upstream: "docker.io" });
    }
    // The name is not searched for a prefix when ?ns= chose the upstream.
    expect(routeOf(r, "corp/app", "ghcr.io")).toEqual({ repository: "ghcr.io/corp/app", name: "corp/app", upstream: "ghcr.io" });
  });

  it("answers an unknown ?ns= with NAME_UNKNOWN instead of the default upstream", () => {
    const r = router(raw);
    expect(nameUnknown(() => r.route("library/alpine", "quay.io")).message).toContain("quay.io");
    nameUnknown(() => r.route("library/alpine", ""));
  });

  it("routes by prefix, stripping it", () => {
    const r = router(raw);
    expect(routeOf(r, "corp/team-a/api", undefined)).toEqual({ repository: "corp/team-a/api", name: "team-a/api", upstream: "corp" });
    expect(routeOf(r, "ghcr.io/org/app", undefined)).toEqual({ repository: "ghcr.io/org/app", name: "org/app", upstream: "ghcr.io" });
    expect(routeOf(r, "docker.io/bitnami/redis", undefined)).toEqual({ repository: "docker.io/bitnami/redis", name: "bitnami/redis", upstream: "docker.io" });
  });

  it("sends a name without a known prefix whole to the default upstream", () => {
    const r = router(raw);
    expect(routeOf(r, "bitnami/redis", undefined)).toEqual({ repository: "docker.io/bitnami/redis", name: "bitnami/redis", upstream: "docker.io" });
    expect(routeOf(r, "quay.io/org/app", undefined)).toEqual({ repository: "docker.io/quay.io/org/app", name: "quay.io/org/app", upstream: "docker.io" });
    // A bare prefix is a one-component name, not a prefix.
    expect(routeOf(r, "corp", undefined)).toEqual({ repository: "docker.io/library/corp", name: "library/corp", upstream: "docker.io" });
  });

  it("maps Docker Hub single names to library/ however the upstream was chosen", () => {
    const r = router(raw);
    expect(routeOf(r, "alpine", undefined)).toEqual({ repository: "docker.io/library/alpine", name: "library/alpine", upstream: "docker.io" });
    expect(routeOf(r, "docker.io/alpine", undefined)).toEqual({ repository: "docker.io/library/alpine", name: "library/alpine", upstream: "docker.io" });
    expect(routeOf(r, "alpine", "docker.io")).toEqual({ repository: "docker.io/library/alpine", name: "library/alpine", upstream: "docker.io" });
    expect(routeOf(r, "ghcr.io/app", undefined)).toEqual({ repository: "ghcr.io/app", name: "app", upstream: "ghcr.io" });
  });

  it("refuses a name without a known prefix when there is no default upstream", () => {
    const r = router({ upstreams: { a: { url: "http://one.test" }, b: { url: "http://two.test" } } });
    expect(routeOf(r, "b/x", undefined)).toMatchObject({ upstream: "b", name: "x" });
    expect(nameUnknown(() => r.route("c/x", undefined)).message).toMatch(/start the name with one of a, b/);
    nameUnknown(() => r.route("x", undefined));
  });

  it("sends request(id, …) to the upstream of the id, without the prefix", async () => {
    const r = router(raw);
    one.requests.length = 0;
    two.requests.length = 0;
    one.addManifest("library/alpine", "3", '{"one":1}');
    two.addManifest("team-a/api", "v1", '{"two":2}');

    const res1 = await r.request("docker.io/library/alpine", "manifests/3");
    expect(res1.status).toBe(200);
    expect(await res1.text()).toBe('{"one":1}');
    const res2 = await r.request("corp/team-a/api", "manifests/v1");
    expect(res2.status).toBe(200);
    expect(await res2.text()).toBe('{"two":2}');
    expect(one.requests.map((q) => q.url.href)).toEqual(["http://one.test/v2/library/alpine/manifests/3"]);
    expect(two.requests.map((q) => q.url.href)).toEqual(["http://two.test/v2/team-a/api/manifests/v1"]);
    expect(r.configOf("corp/team-a/api").prefix).toBe("corp");
    expect(() => r.request("nope/x", "manifests/v1")).toThrow(/not a repository id/);
  });
});
