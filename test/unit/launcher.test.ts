// bin/skiff, the command npm installs: which Node settings each command starts with. A stand-in
// `node` (SKIFF_NODE) prints what it was started with instead of running skiff.
import { spawnSync } from "node:child_process";
import { chmodSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, describe, expect, it } from "vitest";

const launcher = resolve("bin", "skiff");
const script = resolve("bin", "skiff.js");
const dir = mkdtempSync(join(tmpdir(), "skiff-launcher-"));
const fakeNode = join(dir, "node");
writeFileSync(fakeNode, '#!/bin/sh\nprintf "%s\\n" "arena=${MALLOC_ARENA_MAX-unset} mmap=${MALLOC_MMAP_THRESHOLD_-unset} trim=${MALLOC_TRIM_THRESHOLD_-unset} ca=${NODE_EXTRA_CA_CERTS-unset}" "$@"\n');
chmodSync(fakeNode, 0o755);
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** The stand-in's report: the malloc settings and the extra CA file, then its arguments one per line. */
function started(command: string, args: string[], env: Record<string, string> = {}): string[] {
  const { MALLOC_ARENA_MAX: _a, MALLOC_MMAP_THRESHOLD_: _m, MALLOC_TRIM_THRESHOLD_: _t, NODE_EXTRA_CA_CERTS: _c, ...inherited } = process.env;
  const r = spawnSync(command, args, { encoding: "utf8", env: { ...inherited, SKIFF_NODE: fakeNode, ...env } });
  expect(r.stderr).toBe("");
  expect(r.status).toBe(0);
  return r.stdout.trimEnd().split("\n");
}

describe("bin/skiff", () => {
  it("starts convert with one malloc arena and glibc's heap for buffers, and no V8 flags (it sets its own later)", () => {
    expect(started(launcher, ["convert", "./layout:v1", "--out", "a dir"])).toEqual([
      "arena=1 mmap=33554432 trim=67108864 ca=unset",
      script,
      "convert",
      "./layout:v1",
      "--out",
      "a dir",
    ]);
  });

  it("keeps malloc settings the caller set", () => {
    expect(started(launcher, ["convert", "x"], { MALLOC_ARENA_MAX: "4" })[0]).toBe("arena=4 mmap=33554432 trim=67108864 ca=unset");
    expect(started(launcher, ["convert", "x"], { MALLOC_MMAP_THRESHOLD_: "131072", MALLOC_TRIM_THRESHOLD_: "0" })[0]).toBe("arena=1 mmap=131072 trim=0 ca=unset");
  });

  it("starts serve with one malloc arena only, and every other command with the defaults", () => {
    const defaults = "arena=unset mmap=unset trim=unset ca=unset";
    expect(started(launcher, ["serve", "--port", "0"])).toEqual(["arena=1 mmap=unset trim=unset ca=unset", script, "serve", "--port", "0"]);
    expect(started(launcher, ["serve"], { MALLOC_ARENA_MAX: "8" })[0]).toBe("arena=8 mmap=unset trim=unset ca=unset");
    expect(started(launcher, ["mount", "x"])).toEqual([defaults, script, "mount", "x"]);
    expect(started(launcher, [])).toEqual([defaults, script]);
  });

  it("starts convert without the extra CA file, which Node 20 would parse at start, and every other command with it", () => {
    const ca = { NODE_EXTRA_CA_CERTS: "/etc/ssl/private-ca.pem" };
    expect(started(launcher, ["convert", "x"], ca)[0]).toBe("arena=1 mmap=33554432 trim=67108864 ca=unset");
    expect(started(launcher, ["serve"], ca)[0]).toBe("arena=1 mmap=unset trim=unset ca=/etc/ssl/private-ca.pem");
    expect(started(launcher, ["mount", "x"], ca)[0]).toBe("arena=unset mmap=unset trim=unset ca=/etc/ssl/private-ca.pem");
  });

  it("finds bin/skiff.js through the link npm makes", () => {
    const link = join(dir, "skiff");
    symlinkSync(launcher, link);
    expect(started(link, ["convert", "x"])).toEqual(["arena=1 mmap=33554432 trim=67108864 ca=unset", script, "convert", "x"]);
  });
});
