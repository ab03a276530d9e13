import { describe, expect, it } from "vitest";
import { bearerChallenge, parseChallenges } from "../../src/oci/challenge.ts";

describe("parseChallenges", () => {
  it("parses a typical registry Bearer challenge", () => {
    expect(
      parseChallenges(
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull"',
      ),
    ).toEqual([
      {
        scheme: "bearer",
        params: {
          realm: "https://auth.docker.io/token",
          service: "registry.docker.io",
          scope: "repository:library/alpine:pull",
        },
      },
    ]);
  });

  it("splits several challenges in one header", () => {
    expect(parseChallenges('Basic realm="x", Bearer realm="y",service="z"')).toEqual([
      { scheme: "basic", params: { realm: "x" } },
      { scheme: "bearer", params: { realm: "y", service: "z" } },
    ]);
    expect(parseChallenges('Negotiate, Basic realm="b" , Bearer')).toEqual([
      { scheme: "negotiate", params: {} },
      { scheme: "basic", params: { realm: "b" } },
      { scheme: "bearer", params: {} },
    ]);
  });

  it("unescapes quoted strings and keeps commas and spaces inside them", () => {
    expect(parseChallenges('Bearer realm="a, \\"b\\" \\\\ c",scope="repo:x:pull,push", Basic realm="z"')).toEqual([
      { scheme: "bearer", params: { realm: 'a, "b" \\ c', scope: "repo:x:pull,push" } },
      { scheme: "basic", params: { realm: "z" } },
    ]);
  });

  it("stores a token68 under the empty key", () => {
    expect(parseChallenges("Negotiate YII=, Basic dXNlcjpwYXNz==")).toEqual([
      { scheme: "negotiate", params: { "": "YII=" } },
      { scheme: "basic", params: { "": "dXNlcjpwYXNz==" } },
    ]);
    expect(parseChallenges("Custom a/b+c~d.e_f-g")).toEqual([{ scheme: "custom", params: { "": "a/b+c~d.e_f-g" } }]);
  });

  it("lowercases scheme and parameter names and tolerates extra whitespace", () => {
    expect(parseChallenges('  BEARER   Realm = "r" ,\t SERVICE=svc ,  ,  basic  REALM="b"  ')).toEqual([
      { scheme: "bearer", params: { realm: "r", service: "svc" } },
      { scheme: "basic", params: { realm: "b" } },
    ]);
  });

  it("accepts unquoted values, keeping values' case, and the first of a repeated parameter", () => {
    expect(parseChallenges("Bearer realm=https://Auth.example/Token,service=Reg,realm=other")).toEqual([
      { scheme: "bearer", params: { realm: "https://Auth.example/Token", service: "Reg" } },
    ]);
  });

  it("returns what parsed from garbage without throwing", () => {
    expect(parseChallenges("")).toEqual([]);
    expect(parseChallenges(" , ,")).toEqual([]);
    expect(parseChallenges('"oops", Bearer realm="r"')).toEqual([{ scheme: "bearer", params: { realm: "r" } }]);
    expect(parseChallenges('Bearer realm="r" junk here, service="s"')).toEqual([
      { scheme: "bearer", params: { realm: "r", service: "s" } },
    ]);
    expect(parseChallenges('Bearer realm="unterminated, service=x')).toEqual([
      { scheme: "bearer", params: { realm: "unterminated, service=x" } },
    ]);
    expect(parseChallenges("Basic foo bar, Bearer realm=r")).toEqual([
      { scheme: "basic", params: {} },
      { scheme: "bearer", params: { realm: "r" } },
    ]);
  });

  it("never throws or hangs on random input", () => {
    const alphabet = 'ab =,"\\\t/+Bearer realm';
    let seed = 42;
    const random = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    for (let i = 0; i < 2000; i++) {
      const s = Array.from({ length: Math.floor(random() * 40) }, () => alphabet[Math.floor(random() * alphabet.length)]).join("");
      const parsed = parseChallenges(s);
      expect(Array.isArray(parsed), s).toBe(true);
      for (const c of parsed) expect(c.scheme, s).toMatch(/^[^A-Z\s,"=]+$/);
    }
  });
});

describe("bearerChallenge", () => {
  it("returns the first Bearer challenge with a realm", () => {
    expect(bearerChallenge('Basic realm="b", Bearer service="no-realm", BEARER realm="r",service="s",scope="x:y:pull"')).toEqual({
      realm: "r",
      service: "s",
      scope: "x:y:pull",
    });
  });

  it("leaves out absent service and scope", () => {
    const c = bearerChallenge('Bearer realm="https://ghcr.io/token"');
    expect(c).toEqual({ realm: "https://ghcr.io/token" });
    expect(c && "service" in c).toBe(false);
    expect(c && "scope" in c).toBe(false);
  });

  it("returns null without a usable Bearer challenge", () => {
    expect(bearerChallenge(null)).toBeNull();
    expect(bearerChallenge('Basic realm="registry"')).toBeNull();
    expect(bearerChallenge('Bearer service="s"')).toBeNull();
    expect(bearerChallenge('Bearer realm=""')).toBeNull();
    expect(bearerChallenge("")).toBeNull();
  });
});
