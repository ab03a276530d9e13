// `skiff extract`: materialises the root filesystem of a converted image from its store, verifying
// every chunk — what a node would see after mounting the image, as plain files.
import { mkdir, readdir, stat } from "node:fs/promises";
import { parseFlags, UsageError } from "./args.ts";
import { openConverted } from "./converted.ts";
import { materialize, type MaterializeStats } from "./materialize.ts";
import { bar, formatBytes, Progress } from "./progress.ts";
import { storeReadStored } from "./stored-chunks.ts";

export const extractHelp = `Usage: skiff extract DIR DEST

Writes the root filesystem of the image that 'skiff convert' put in DIR into DEST, reading every
chunk from DIR's store and checking it against its sha256 before writing it. DEST is created if
missing and must be empty. Run as root to restore owners and device nodes; extended attributes
need setfattr (Debian package attr). Nothing is ever written outside DEST, whatever the image's
names, symlinks and hardlinks say.

Options:
  -h, --help    show this help`;

export async function extractCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseFlags(argv, {}, true);
  if (values.help) {
    console.log(extractHelp);
    return 0;
  }
  if (positionals.length !== 2) throw new UsageError("expected DIR and DEST (see --help)");
  const [dir, dest] = positionals as [string, string];
  try {
    const { bootstrap, image, store } = await openConverted(dir, { requireDir: true });
    await prepareDest(dest);

    let total = 0;
    for (let i = 0; i < bootstrap.inodeCount; i++) {
      const ino = bootstrap.inode(i);
      if (ino.type === "file") total += ino.size;
    }
    const progress = new Progress();
    const started = Date.now();
    let warnings = 0;
    let stats: MaterializeStats;
    try {
      stats = await materialize({
        bootstrap,
        dest,
        readStored: storeReadStored(dir, image!, store!),
        warn: (message) => {
          warnings++;
          progress.done();
          process.stderr.write(`skiff extract: warning: ${message}\n`);
        },
        onProgress: (s) => progress.update(`extracting ${bar(total ? s.bytes / total : 1)} ${s.entries} entries, ${formatBytes(s.bytes)} of ${formatBytes(total)}`),
      });
    } finally {
      progress.done();
    }
    const seconds = ((Date.now() - started) / 1000).toFixed(1);
    console.log(
      [
        `extracted ${image!.reference} (${bootstrap.platform}) into ${dest} in ${seconds} s`,
        `  entries    ${stats.entries}: ${stats.files} files, ${stats.dirs + 1} directories, ${stats.symlinks} symlinks, ${stats.hardlinks} hardlinks, ${stats.devices} devices, ${stats.fifos} fifos`,
        `  bytes      ${formatBytes(stats.bytes)} in ${stats.chunks} verified chunks`,
        ...(stats.skipped || warnings ? [`  skipped    ${stats.skipped} entries, ${warnings} warnings (see above)`] : []),
      ].join("\n"),
    );
    return 0;
  } catch (err) {
    process.stderr.write(`skiff extract: ${(err as Error).message}\n`);
    return 1;
  }
}

/** DEST must be an empty directory or not exist yet; extracting over existing files would mix trees. */
async function prepareDest(dest: string): Promise<void> {
  let isDir: boolean;
  try {
    isDir = (await stat(dest)).isDirectory();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    await mkdir(dest, { recursive: true });
    return;
  }
  if (!isDir) throw new Error(`${dest} exists and is not a directory`);
  if ((await readdir(dest)).length > 0) throw new Error(`${dest} is not empty; extract needs an empty or missing directory`);
}
