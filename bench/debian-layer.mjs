// A Debian root filesystem as one image layer: debootstrap (minbase plus the packages asked for)
// from Debian's archive, packed into a tar (sorted names, numeric owners, xattrs) and its gzip.
// Built once into a cache directory and reused: the first build takes a minute or two and needs
// root and Debian's debootstrap; later calls only hash the cached tar. Shared by bench:cold-start
// and the e2e tests' images.
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { createReadStream, existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, statSync } from "node:fs";
import { join } from "node:path";

export const DEBIAN_MIRROR = "http://deb.debian.org/debian";

/** Runs a command to completion within `timeoutMs` (then SIGKILL); rejects unless it exits 0. */
function runCommand(cmd, args, { timeoutMs = 600_000 } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ["ignore", "ignore", "pipe"] });
    let stderr = "";
    child.stderr.on("data", (d) => (stderr = (stderr + d).slice(-8000)));
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.once("error", (err) => (clearTimeout(timer), reject(new Error(`cannot run ${cmd}: ${err.message}`))));
    child.once("close", (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve();
      else reject(new Error(`${cmd} ${args.join(" ")}: ${signal ? `killed (${signal}, ${timeoutMs} ms limit)` : `exit ${code}`}\n${stderr.slice(-2000)}`));
    });
  });
}

async function sha256File(path) {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(path)) hash.update(chunk);
  return `sha256:${hash.digest("hex")}`;
}

/** Mount points at or under `dir` (debootstrap mounts /proc and /sys in the tree while it works), deepest first. */
function mountsUnder(dir) {
  const unescape = (s) => s.replace(/\\([0-7]{3})/g, (_, o) => String.fromCharCode(parseInt(o, 8)));
  return readFileSync("/proc/self/mounts", "utf8")
    .split("\n")
    .map((line) => unescape(line.split(" ")[1] ?? ""))
    .filter((p) => p === dir || p.startsWith(`${dir}/`))
    .sort((a, b) => b.length - a.length);
}

/**
 * The layer of a debootstrapped Debian, from `cacheDir` (built there first if missing):
 *   name: the files' stem in cacheDir (`<name>.tar`, `<name>.tar.gz`);
 *   packages: what `--include` adds to minbase; suite (default stable), mirror;
 *   prune: paths in the tree (relative, e.g. "var/lib/apt/lists") emptied before packing;
 *   workDir: where the tree is built (a temp directory inside it, removed afterwards);
 *   run(cmd, args, { timeoutMs }): how to run debootstrap, tar and gzip (default: spawn here);
 *   log(message): told when a build starts.
 * Resolves { tarFile, gzFile, tarBytes, gzBytes, diffId, digest } (diffId: sha256 of the tar;
 * digest: of the gzip).
 */
export async function debianLayer({
  cacheDir,
  name,
  packages,
  suite = "stable",
  mirror = DEBIAN_MIRROR,
  prune = [],
  workDir,
  run = runCommand,
  log = (m) => console.error(m),
  timeoutMs = 900_000,
}) {
  const tarFile = join(cacheDir, `${name}.tar`);
  const gzFile = join(cacheDir, `${name}.tar.gz`);
  if (!existsSync(gzFile) || !existsSync(tarFile)) {
    mkdirSync(cacheDir, { recursive: true });
    mkdirSync(workDir, { recursive: true });
    const build = mkdtempSync(join(workDir, "debootstrap-"));
    const rootfs = join(build, "rootfs");
    const tmpTar = join(build, "layer.tar");
    const tmpGz = join(build, "layer.tar.gz");
    log(`building ${name} with debootstrap (${suite}, minbase + ${packages.join(", ")}); kept in ${cacheDir}`);
    try {
      await run("debootstrap", ["--variant=minbase", `--include=${packages.join(",")}`, suite, rootfs, mirror], { timeoutMs });
      for (const p of prune) {
        if (p.startsWith("/") || p.split("/").includes("..")) throw new Error(`prune path must be relative: ${p}`);
        if (existsSync(join(rootfs, p))) await run("find", [join(rootfs, p), "-mindepth", "1", "-delete"], { timeoutMs: 60_000 });
      }
      await run("tar", ["-C", rootfs, "--sort=name", "--numeric-owner", "--xattrs", "-cf", tmpTar, "."], { timeoutMs: 300_000 });
      await run("sh", ["-c", 'gzip -6 -c "$1" > "$2"', "sh", tmpTar, tmpGz], { timeoutMs: 300_000 });
      // The tar first: the gzip's presence says the pair is complete.
      renameSync(tmpTar, tarFile);
      renameSync(tmpGz, gzFile);
    } finally {
      for (const m of mountsUnder(build)) await run("umount", ["-l", m], { timeoutMs: 10_000 }).catch(() => {});
      rmSync(build, { recursive: true, force: true, maxRetries: 3 });
    }
  }
  const [diffId, digest] = await Promise.all([sha256File(tarFile), sha256File(gzFile)]);
  return { tarFile, gzFile, tarBytes: statSync(tarFile).size, gzBytes: statSync(gzFile).size, diffId, digest };
}
