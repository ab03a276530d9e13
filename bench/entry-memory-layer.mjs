// A synthetic node_modules-like gzip layer of about `files` small files, written to `path`
// deterministically: packages (some scoped, some nested under another package's node_modules) with
// package.json, README.md, LICENSE, index.js and a lib/ of modules. Every file's bytes are its own
// (its path is in them), so every file is a chunk of its own, as in a real node_modules.
// Everything is under `root` (default node_modules), so layers with other roots share no path.
// Returns { entries, files, digest, size } of the layer (entries: tar entries, directories included).
import { createHash } from "node:crypto";
import { closeSync, openSync, writeSync } from "node:fs";
import { gzipSync } from "node:zlib";

const WORDS = ["core", "util", "parse", "json", "stream", "http", "path", "glob", "color", "string", "array", "async", "event", "emitter", "buffer", "crypto",
  "webpack", "babel", "plugin", "loader", "react", "dom", "types", "lodash", "minimatch", "semver", "debug", "ms", "chalk", "yargs", "commander", "uuid"];
const MODULES = ["index", "utils", "helpers", "constants", "parser", "compile", "runtime", "main", "browser", "node", "types", "errors", "format", "options"];

/** One ustar header: long paths go in the prefix field, split at a slash. */
function header(path, type, size) {
  const h = Buffer.alloc(512);
  let name = path;
  let prefix = "";
  if (Buffer.byteLength(path) > 100) {
    const cut = path.lastIndexOf("/", path.length - 1 - (type === "5" ? 1 : 0));
    prefix = path.slice(0, cut);
    name = path.slice(cut + 1);
    if (Buffer.byteLength(name) > 100 || Buffer.byteLength(prefix) > 155) throw new Error(`path too long for ustar: ${path}`);
  }
  h.write(name, 0);
  h.write(type === "5" ? "0000755\0" : "0000644\0", 100);
  h.write("0001750\0", 108);
  h.write("0001750\0", 116);
  h.write(`${size.toString(8).padStart(11, "0")}\0`, 124);
  h.write("14571626300\0", 136);
  h.write("        ", 148);
  h.write(type, 156);
  h.write("ustar\0", 257);
  h.write("00", 263);
  h.write(prefix, 345);
  let sum = 0;
  for (const b of h) sum += b;
  h.write(`${sum.toString(8).padStart(6, "0")}\0 `, 148);
  return h;
}

export function writeNodeModulesLayer(path, files, root = "node_modules") {
  const fd = openSync(path, "w");
  const digest = createHash("sha256");
  let size = 0;
  let pending = [];
  let pendingBytes = 0;
  const flush = () => {
    // One gzip member per batch: a valid gzip stream (concatenated members), written as it goes.
    const gz = gzipSync(Buffer.concat(pending), { level: 6 });
    digest.update(gz);
    writeSync(fd, gz);
    size += gz.length;
    pending = [];
    pendingBytes = 0;
  };
  const push = (b) => {
    pending.push(b);
    pendingBytes += b.length;
    if (pendingBytes >= 8 << 20) flush();
  };
  let entries = 0;
  let made = 0;
  const dir = (p) => {
    push(header(`${p}/`, "5", 0));
    entries++;
  };
  const file = (p) => {
    const body = Buffer.from(`// ${p}\n'use strict';\nmodule.exports = function () { return ${JSON.stringify(p)}.length * ${made}; };\n`);
    push(header(p, "0", body.length));
    push(body);
    push(Buffer.alloc((512 - (body.length % 512)) % 512));
    entries++;
    made++;
  };
  let seed = 1;
  const rand = (n) => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return (seed >>> 8) % n;
  };
  const pkg = (base, n) => {
    const word = () => WORDS[rand(WORDS.length)];
    const name = rand(5) === 0 ? `@${word()}/${word()}-${n}` : `${word()}-${word()}-${n}`;
    if (name.startsWith("@")) {
      const scope = `${base}/${name.slice(0, name.indexOf("/"))}`;
      dir(scope);
    }
    const p = `${base}/${name}`;
    dir(p);
    for (const f of ["package.json", "README.md", "LICENSE", "index.js"]) file(`${p}/${f}`);
    dir(`${p}/lib`);
    const modules = 4 + rand(20);
    for (let i = 0; i < modules && made < files; i++) file(`${p}/lib/${MODULES[i % MODULES.length]}${i >= MODULES.length ? `-${i}` : ""}.js`);
    return p;
  };
  const parts = root.split("/");
  parts.forEach((_, i) => dir(parts.slice(0, i + 1).join("/")));
  let n = 0;
  while (made < files) {
    const p = pkg(root, n++);
    // Every fourth package carries its own node_modules with a few nested packages.
    if (rand(4) === 0 && made < files) {
      dir(`${p}/node_modules`);
      for (let k = 0; k < 3 && made < files; k++) pkg(`${p}/node_modules`, n++);
    }
  }
  push(Buffer.alloc(1024));
  flush();
  closeSync(fd);
  return { entries, files: made, digest: `sha256:${digest.digest("hex")}`, size };
}
