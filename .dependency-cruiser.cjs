// The layering of src/ and node-agent/src, checked by `npm run lint:layers` (and by `npm test`,
// through test/unit/layering.test.ts).
//
// Rows bottom to top. A folder may import itself and any folder on a LOWER row: imports point down.
// Folders on the same row don't import each other, except on a row marked `shareRow`.
// npm packages and node: builtins are not layered: any module may use them.
const path = require("node:path");

const layers = [
  { folders: ["util", "hash", "version.ts"], shareRow: true, why: "helpers with no knowledge of registries or images" },
  { folders: ["format"], why: "the bootstrap format, chunk codec and conversion params: pure bytes, no I/O" },
  { folders: ["client", "ranges", "bench"], why: "portable pieces that need no server: the lazy-API client (the node agent uses it), the CLI's range checker and load tools" },
  { folders: ["oci"], why: "references, digests and the upstream client know nothing of caching or serving" },
  { folders: ["store"], why: "content stores are plain blob storage under the cache" },
  { folders: ["config"], why: "the config file is read before access control exists: access builds on config, not the other way round" },
  { folders: ["access"], why: "access control sits on the config and is used by the server" },
  { folders: ["cache", "convert"], why: "the blob cache and the converter are independent of each other and of the proxy's lazy conversions" },
  { folders: ["lazy"], why: "lazy conversions on the proxy drive the converter over the cache" },
  { folders: ["http"], why: "the Hono app is assembled from everything below and is started only by the runtimes" },
  { folders: ["runtime"], why: "runtime entries start the app; the CLI starts a runtime, not the reverse" },
  { folders: ["cli"], alsoMay: ["node-agent/src"], why: "the `skiff` command sits on top and also starts the node side" },
];

// The node agent is a separate Node-only package: from skiff it takes only the pure, portable parts.
const nodeAgentMay = ["format", "hash", "util", "client"];

const escape = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
// A regex for files in the given src/ folders (a name ending in .ts is a single file under src/).
const inSrc = (folders) => `^src/(${folders.map((f) => (f === "$1" ? f : escape(f))).join("|")})(/|$)`;
const label = (folders) => folders.map((f) => f.replace(/\.ts$/, "")).join("-");
const CHECKED = "^(src|node-agent/src)/";

const layerRules = layers.map((layer, i) => {
  const below = layers.slice(0, i).flatMap((l) => l.folders);
  const mayImport = [...below, ...(layer.shareRow ? layer.folders : [])];
  return {
    name: `${label(layer.folders)}-imports-only-lower-layers`,
    severity: "error",
    comment: `${layer.why}. May import: ${[...mayImport, ...(layer.alsoMay ?? [])].join(", ") || "nothing else in skiff"}.`,
    from: { path: inSrc(layer.folders) },
    to: {
      path: CHECKED,
      // $1 is the importing module's own folder.
      pathNot: [inSrc(["$1", ...mayImport]), ...(layer.alsoMay ?? []).map((p) => `^${escape(p)}/`)],
    },
  };
});

/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    ...layerRules,
    {
      name: `node-agent-imports-only-${nodeAgentMay.join("-")}`,
      severity: "error",
      comment: `the node agent is its own Node-only package; from skiff it may import only ${nodeAgentMay.join(", ")}.`,
      from: { path: "^node-agent/src/" },
      to: { path: "^src/", pathNot: inSrc(nodeAgentMay) },
    },
    {
      name: "src-folder-has-no-layer",
      severity: "error",
      comment: "every folder under src/ needs a row in the layers of .dependency-cruiser.cjs, or its imports go unchecked.",
      from: { path: "^src/", pathNot: inSrc(layers.flatMap((l) => l.folders)) },
      to: { path: CHECKED },
    },
    {
      name: "no-circular",
      severity: "error",
      comment: "modules that import each other, directly or round a loop, can't be layered.",
      from: {},
      to: { circular: true },
    },
    {
      name: "no-unresolvable-import",
      severity: "error",
      comment: "an import the checker can't resolve is an import it can't check (or a typo).",
      from: {},
      to: { couldNotResolve: true },
    },
  ],
  options: {
    doNotFollow: { path: "node_modules" },
    // Type-only imports count too: a type from a higher layer is still a dependency on it.
    tsPreCompilationDeps: true,
    tsConfig: { fileName: path.join(__dirname, "tsconfig.json") },
    // Packages that name their entry points in package.json's "exports" (zstddec/stream).
    enhancedResolveOptions: { exportsFields: ["exports"], conditionNames: ["import", "types", "default"] },
  },
};
