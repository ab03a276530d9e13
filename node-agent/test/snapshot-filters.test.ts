// containerd's filter expressions as the snapshotter's List receives them.
import { describe, expect, it } from "vitest";
import { FilterError, parseFilters, type FieldOf } from "../src/snapshotter/filters.ts";

const snapshot = (fields: Record<string, string>, labels: Record<string, string> = {}): FieldOf => ([field, ...rest]) =>
  field === "labels" ? labels[rest.join(".")] : rest.length === 0 ? fields[field!] : undefined;

describe("containerd filters", () => {
  const lazy = snapshot({ name: "skiff-lazy/0/sha256:aa", parent: "k8s.io/3/sha256:bb", kind: "committed" }, { "containerd.io/snapshot.ref": "sha256:aa", "containerd.io/gc.root": "" });

  it("the unpacker's filter: a quoted label key with dots and slashes, and a quoted parent", () => {
    expect(parseFilters(['labels."containerd.io/snapshot.ref"==sha256:aa,parent=="k8s.io/3/sha256:bb"'])(lazy)).toBe(true);
    expect(parseFilters(['labels."containerd.io/snapshot.ref"==sha256:aa,parent=="k8s.io/4/sha256:bb"'])(lazy)).toBe(false);
  });

  it("no filters match everything; several filters match if any does", () => {
    expect(parseFilters([])(lazy)).toBe(true);
    expect(parseFilters(["kind==active", "kind==committed"])(lazy)).toBe(true);
    expect(parseFilters(["kind==active", "name==x"])(lazy)).toBe(false);
  });

  it("!=, ~= and presence (an empty label is absent)", () => {
    expect(parseFilters(["kind!=active"])(lazy)).toBe(true);
    expect(parseFilters(['name~="^skiff-lazy/"'])(lazy)).toBe(true);
    expect(parseFilters(["name~=^k8s"])(lazy)).toBe(false);
    expect(parseFilters(['labels."containerd.io/snapshot.ref"'])(lazy)).toBe(true);
    expect(parseFilters(['labels."containerd.io/gc.root"'])(lazy)).toBe(false);
    expect(parseFilters(["labels.missing"])(lazy)).toBe(false);
  });

  it("a comma or an operator inside quotes is part of the value", () => {
    const odd = snapshot({ name: "a,b==c" });
    expect(parseFilters(['name=="a,b==c"'])(odd)).toBe(true);
  });

  it("refuses an unterminated quote and a bad regular expression", () => {
    expect(() => parseFilters(['name=="open'])).toThrow(FilterError);
    expect(() => parseFilters(["name~=("])).toThrow(FilterError);
  });
});
