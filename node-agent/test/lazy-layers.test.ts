// The snapshotter's lazy layers against a stubbed proxy: the layer bootstraps are asked for beside the
// image bootstrap, with this node's parameters, and used only when they are the conversion the image
// bootstrap names.
import { createHash } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import type { FetchLike, FetchResponse } from "../../src/client/lazy-api.ts";
import type { ChunkCodec } from "../../src/format/chunk-codec.ts";
import { codecId } from "../../src/format/codec.ts";
import { encodeBootstrap } from "../../src/format/encode.ts";
import { newDir } from "../../src/format/model.ts";
import { CRI_IMAGE_LAYERS, CRI_IMAGE_REF, CRI_LAYER_DIGEST, CRI_MANIFEST_DIGEST, LazyLayers } from "../src/snapshotter/lazy-layers.ts";
import type { MountsClient } from "../src/snapshotter/mounts-client.ts";

const PROXY = "http://proxy.test:5000";
const MANIFEST = `sha256:${"ab".repeat(32)}`;
const LAYERS = [`sha256:${"11".repeat(32)}`, `sha256:${"22".repeat(32)}`];
const DATA = [new Uint8Array(32).fill(1), new Uint8Array(32).fill(2)];

/** The codec id of params `v1-c20-<codec>`. */
const codecOf = (params: string) => codecId(params.slice("v1-c20-".length) as ChunkCodec);
const layerBody = (i: number, params: string, data = DATA[i]!) =>
  encodeBootstrap({ kind: "layer", codec: codecOf(params), chunkShift: 20, platform: "", blobs: [{ dataDigest: data, storedSize: 0, layerDigest: LAYERS[i]! }], chunks: [], root: newDir() });
const imageBody = (params: string) =>
  encodeBootstrap({
    kind: "image",
    codec: codecOf(params),
    chunkShift: 20,
    platform: "linux/amd64",
    blobs: LAYERS.map((layerDigest, i) => ({ dataDigest: DATA[i]!, storedSize: 0, layerDigest })),
    chunks: [],
    root: newDir(),
  });

function answer(body: Uint8Array, params: string, extra: Record<string, string> = {}): FetchResponse {
  const digest = `sha256:${createHash("sha256").update(body).digest("hex")}`;
  return new Response(new Uint8Array(body), { headers: { "docker-content-digest": digest, "skiff-params": params, ...extra } }) as unknown as FetchResponse;
}

interface Proxy {
  fetch: FetchLike;
  /** Paths asked for, in order. */
  asked: string[];
  /** Paths asked for by the time the image bootstrap was answered. */
  beforeImage: string[];
}

/** A proxy whose image bootstrap names `imageParams` and which holds layer bootstraps for `layerParams`; the image is answered only after `holdImageFor` ms. */
function proxy({ imageParams = "v1-c20-deflate-raw", layerParams = ["v1-c20-deflate-raw"], holdImageFor = 50, layerData = DATA } = {}): Proxy {
  const asked: string[] = [];
  const beforeImage: string[] = [];
  const fetch: FetchLike = async (url) => {
    const path = new URL(url).pathname;
    asked.push(path);
    if (path.includes("/_skiff/bootstrap/")) {
      await new Promise((resolve) => setTimeout(resolve, holdImageFor));
      beforeImage.push(...asked);
      return answer(imageBody(imageParams), imageParams, { "skiff-manifest-digest": MANIFEST });
    }
    const m = /\/_skiff\/layers\/([^/]+)\/([^/]+)\/bootstrap$/.exec(path);
    const i = m ? LAYERS.indexOf(m[1]!) : -1;
    if (i < 0 || !layerParams.includes(m![2]!)) {
      return new Response(JSON.stringify({ errors: [{ code: "BLOB_UNKNOWN", message: "not converted" }] }), { status: 404 }) as unknown as FetchResponse;
    }
    return answer(layerBody(i, m![2]!, layerData[i]), m![2]!);
  };
  return { fetch, asked, beforeImage };
}

const mounted: string[] = [];
const mounts = { mount: async (spec: { mountpoint: string }) => void mounted.push(spec.mountpoint), unmount: async () => {} } as unknown as MountsClient;
const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  mounted.length = 0;
});

function layers(p: Proxy, codec = "deflate-raw") {
  const counted: string[] = [];
  const lazy = new LazyLayers({ proxy: PROXY, fetchImpl: p.fetch, mounts, convertTimeoutMs: 5_000, codec, log: () => {}, count: (outcome, reason) => void counted.push(reason ? `${outcome}: ${reason}` : outcome) });
  return { lazy, counted };
}

/** Prepares layer `i` as CRI labels it; the mountpoint sits in a directory of its own. */
function prepare(lazy: LazyLayers, i: number) {
  const dir = mkdtempSync(join(tmpdir(), "skiff-lazy-layers-"));
  dirs.push(dir);
  const labels = {
    [CRI_IMAGE_REF]: "proxy.test:5000/app:1",
    [CRI_MANIFEST_DIGEST]: MANIFEST,
    [CRI_LAYER_DIGEST]: LAYERS[i]!,
    [CRI_IMAGE_LAYERS]: LAYERS.slice(i).join(","),
  };
  return lazy.prepare(labels, join(dir, "fs"));
}

const layerPath = (i: number, params: string) => `/v2/app/_skiff/layers/${LAYERS[i]}/${params}/bootstrap`;

describe("lazy layers", () => {
  it("asks for every layer's bootstrap beside the image's, and asks no more once the image names that conversion", async () => {
    const p = proxy();
    const { lazy, counted } = layers(p);
    expect(await prepare(lazy, 0)).toMatchObject({ lazy: { layerDigest: LAYERS[0], params: "v1-c20-deflate-raw" } });
    expect(await prepare(lazy, 1)).toMatchObject({ lazy: { layerDigest: LAYERS[1], params: "v1-c20-deflate-raw" } });
    expect(p.beforeImage).toEqual(expect.arrayContaining([layerPath(0, "v1-c20-deflate-raw"), layerPath(1, "v1-c20-deflate-raw")]));
    expect(p.asked.filter((path) => path.includes("/layers/")).sort()).toEqual([layerPath(0, "v1-c20-deflate-raw"), layerPath(1, "v1-c20-deflate-raw")]);
    expect(counted).toEqual(["lazy", "lazy"]);
    expect(mounted).toHaveLength(2);
  });

  it("asks again with the image's parameters when the proxy answered the image with others (none first)", async () => {
    const p = proxy({ imageParams: "v1-c20-none", layerParams: ["v1-c20-none"] });
    const { lazy, counted } = layers(p);
    expect(await prepare(lazy, 0)).toMatchObject({ lazy: { params: "v1-c20-none" } });
    expect(p.asked.filter((path) => path.includes("/layers/"))).toEqual(expect.arrayContaining([layerPath(0, "v1-c20-deflate-raw"), layerPath(0, "v1-c20-none")]));
    expect(counted).toEqual(["lazy"]);
  });

  it("does not take an early answer of another conversion than the image names: asks again, and falls back when that one differs too", async () => {
    const p = proxy({ layerData: [new Uint8Array(32).fill(9), DATA[1]!] });
    const { lazy, counted } = layers(p);
    expect(await prepare(lazy, 0)).toBeNull();
    expect(p.asked.filter((path) => path === layerPath(0, "v1-c20-deflate-raw"))).toHaveLength(2);
    expect(counted).toEqual(["ordinary: other"]);
    expect(mounted).toHaveLength(0);
  });
});
