// Where the snapshotter asks the proxy for an image named by CRI's image-ref label.
import { describe, expect, it } from "vitest";
import { locateImage } from "../src/snapshotter/lazy-layers.ts";

describe("locateImage", () => {
  const proxy = "http://skiff.internal:8080";
  it("a registry in the reference goes in ?ns=, Docker Hub's short names get library/", () => {
    expect(locateImage("docker.io/library/python:3.12", proxy)).toEqual({ name: "library/python", ns: "docker.io" });
    expect(locateImage("python:3.12", proxy)).toEqual({ name: "library/python", ns: "docker.io" });
    expect(locateImage("bitnami/redis", proxy)).toEqual({ name: "bitnami/redis", ns: "docker.io" });
    expect(locateImage("ghcr.io/org/app@sha256:" + "a".repeat(64), proxy)).toEqual({ name: "org/app", ns: "ghcr.io" });
    expect(locateImage("127.0.0.1:5000/e2e/py:1", proxy)).toEqual({ name: "e2e/py", ns: "127.0.0.1:5000" });
    expect(locateImage("localhost/app:v1", proxy)).toEqual({ name: "app", ns: "localhost" });
  });

  it("an image named by the proxy itself needs no ?ns=", () => {
    expect(locateImage("skiff.internal:8080/team/app:v2", proxy)).toEqual({ name: "team/app" });
  });
});
