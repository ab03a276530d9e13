import { describe, expect, it } from "vitest";
import {
  MAX_NAME_LENGTH,
  formatImageReference,
  isDigestLike,
  isValidRepositoryName,
  isValidTag,
  parseDigest,
  parseImageReference,
  splitRegistryPath,
} from "../../src/oci/reference.ts";

const SHA256 = "a".repeat(32) + "0123456789abcdef".repeat(2);
const SHA512 = "0123456789abcdef".repeat(8);

describe("isValidRepositoryName", () => {
  it("accepts names built from the distribution-spec components", () => {
    for (const name of ["alpine", "library/alpine", "a/b/c/d", "my.app", "my_app", "my__app", "my-app", "my---app", "a0/9z", "x"]) {
      expect(isValidRepositoryName(name), name).toBe(true);
    }
  });

  it("rejects bad separators, uppercase, empty components and dot-dot", () => {
    for (const name of [
      "",
      "Alpine",
      "library/Alpine",
      "/alpine",
      "alpine/",
      "a//b",
      "..",
      "a/../b",
      "a..b",
      "a___b",
      "a.-b",
      "-a",
      "a-",
      ".a",
      "a_",
      "a b",
      "a:b",
      "a@b",
    ]) {
      expect(isValidRepositoryName(name), name).toBe(false);
    }
  });

  it("limits the total length to 255 characters", () => {
    expect(MAX_NAME_LENGTH).toBe(255);
    const ok = ("a".repeat(99) + "/").repeat(2) + "a".repeat(55); // 255 characters
    expect(ok).toHaveLength(255);
    expect(isValidRepositoryName(ok)).toBe(true);
    expect(isValidRepositoryName(ok + "a")).toBe(false);
  });
});

describe("isValidTag", () => {
  it("follows [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}", () => {
    for (const tag of ["latest", "v1.2.3", "_x", "A-b_c.D", "0", "x".repeat(128)]) {
      expect(isValidTag(tag), tag).toBe(true);
    }
    for (const tag of ["", ".x", "-x", "x".repeat(129), "a:b", "a/b", "a+b", "a@b", "é"]) {
      expect(isValidTag(tag), tag).toBe(false);
    }
  });
});

describe("digests", () => {
  it("parses sha256 and sha512 digests into algorithm, hex and value", () => {
    expect(parseDigest(`sha256:${SHA256}`)).toEqual({ algorithm: "sha256", hex: SHA256, value: `sha256:${SHA256}` });
    expect(parseDigest(`sha512:${SHA512}`)).toEqual({ algorithm: "sha512", hex: SHA512, value: `sha512:${SHA512}` });
  });

  it("rejects other algorithms, wrong lengths, uppercase hex and malformed strings", () => {
    for (const s of [
      `sha384:${SHA256}`,
      `sha256+b64u:${SHA256}`,
      `SHA256:${SHA256}`,
      `sha256:${SHA256.slice(1)}`,
      `sha256:${SHA256}0`,
      `sha512:${SHA256}`,
      `sha256:${SHA256.toUpperCase()}`,
      `sha256:${SHA256.slice(1)}g`,
      `sha256::${SHA256}`,
      `:${SHA256}`,
      "sha256:",
      SHA256,
      "",
      ` sha256:${SHA256}`,
    ]) {
      expect(parseDigest(s), s).toBeNull();
    }
  });

  it("tells digest-like manifest references from tags", () => {
    expect(isDigestLike(`sha256:${SHA256}`)).toBe(true);
    expect(isDigestLike("sha256:nothex")).toBe(true);
    expect(isDigestLike("latest")).toBe(false);
    expect(isDigestLike("sha256")).toBe(false);
  });
});

describe("parseImageReference", () => {
  const digest = parseDigest(`sha256:${SHA256}`)!;

  it("parses names with tags and digests but fills in no defaults", () => {
    expect(parseImageReference("alpine")).toEqual({ name: "alpine" });
    expect(parseImageReference("library/alpine:3.20")).toEqual({ name: "library/alpine", tag: "3.20" });
    expect(parseImageReference(`alpine@sha256:${SHA256}`)).toEqual({ name: "alpine", digest });
    expect(parseImageReference(`a/b:v1@sha256:${SHA256}`)).toEqual({ name: "a/b", tag: "v1", digest });
  });

  it("recognises a registry by a dot, a port, localhost or an IPv6 address", () => {
    expect(parseImageReference("docker.io/library/alpine:latest")).toEqual({
      registry: "docker.io",
      name: "library/alpine",
      tag: "latest",
    });
    expect(parseImageReference("localhost/foo")).toEqual({ registry: "localhost", name: "foo" });
    expect(parseImageReference("localhost:5000/foo/bar:tag")).toEqual({
      registry: "localhost:5000",
      name: "foo/bar",
      tag: "tag",
    });
    expect(parseImageReference("reg:5000/foo")).toEqual({ registry: "reg:5000", name: "foo" });
    expect(parseImageReference("10.0.0.1:443/x")).toEqual({ registry: "10.0.0.1:443", name: "x" });
    expect(parseImageReference(`[::1]:5000/a/b:t@sha256:${SHA256}`)).toEqual({
      registry: "[::1]:5000",
      name: "a/b",
      tag: "t",
      digest,
    });
    expect(parseImageReference("[fe80::1]/x")).toEqual({ registry: "[fe80::1]", name: "x" });
    // Uppercase cannot start a repository name, so such a component is a host (as in Docker).
    expect(parseImageReference("MyHost/app")).toEqual({ registry: "MyHost", name: "app" });
    // Without a dot, colon or "localhost" the first component is part of the name.
    expect(parseImageReference("myorg/app")).toEqual({ name: "myorg/app" });
  });

  it("throws a one-line error naming the problem", () => {
    const cases: [string, RegExp][] = [
      ["", /empty/],
      ["Alpine", /name/],
      ["alpine:", /tag/],
      ["alpine:bad/tag", /registry/],
      ["alpine:.x", /tag/],
      ["alpine@sha256:abc", /digest/],
      [`alpine@md5:${SHA256}`, /digest/],
      ["alpine@", /digest/],
      ["reg.io:99999/x", /registry/],
      ["-bad.io/x", /registry/],
      ["[::1/x", /registry/],
      ["docker.io/", /name/],
      ["docker.io//x", /name/],
      ["a\nb", /name/],
    ];
    for (const [input, why] of cases) {
      let message = "";
      try {
        parseImageReference(input);
      } catch (e) {
        message = (e as Error).message;
      }
      expect(message, JSON.stringify(input)).toMatch(why);
      expect(message).not.toContain("\n");
    }
  });

  it("round-trips through formatImageReference", () => {
    for (const s of [
      "alpine",
      "a/b:t",
      `ghcr.io/o/r@sha256:${SHA256}`,
      `[::1]:5000/a:t@sha512:${SHA512}`,
      "localhost:5000/x/y/z:1.0",
    ]) {
      expect(formatImageReference(parseImageReference(s))).toBe(s);
    }
  });
});

describe("splitRegistryPath", () => {
  it("splits manifests, blobs and tags paths", () => {
    expect(splitRegistryPath("library/alpine/manifests/latest")).toEqual({
      name: "library/alpine",
      kind: "manifests",
      rest: "latest",
    });
    expect(splitRegistryPath(`a/b/blobs/sha256:${SHA256}`)).toEqual({
      name: "a/b",
      kind: "blobs",
      rest: `sha256:${SHA256}`,
    });
    expect(splitRegistryPath("a/tags/list")).toEqual({ name: "a", kind: "tags", rest: "list" });
    expect(splitRegistryPath("a/blobs/uploads/")).toEqual({ name: "a", kind: "blobs", rest: "uploads/" });
  });

  it("splits at the last keyword so names may contain those words", () => {
    expect(splitRegistryPath("manifests/blobs/manifests/v1")).toEqual({
      name: "manifests/blobs",
      kind: "manifests",
      rest: "v1",
    });
    expect(splitRegistryPath("x/manifests/tags/list")).toEqual({ name: "x/manifests", kind: "tags", rest: "list" });
    expect(splitRegistryPath("tags/tags/tags/list")).toEqual({ name: "tags/tags", kind: "tags", rest: "list" });
  });

  it("returns null without a keyword or without a name", () => {
    expect(splitRegistryPath("library/alpine")).toBeNull();
    expect(splitRegistryPath("a/manifest/latest")).toBeNull();
    expect(splitRegistryPath("manifests/latest")).toBeNull();
    expect(splitRegistryPath("/manifests/latest")).toBeNull();
    expect(splitRegistryPath("")).toBeNull();
  });
});
