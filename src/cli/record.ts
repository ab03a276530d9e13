// `skiff record`: runs a command in a chroot over a lazy mount of an image and writes the chunks it
// read, in the order it first read them, as a prefetch list for `skiff mount --prefetch FILE`.
import { spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { constants, tmpdir } from "node:os";
import { join } from "node:path";
import { parseFlags, UsageError } from "./args.ts";
import { agentFlags, agentMountOptions } from "./mount.ts";

export const recordHelp = `Usage: skiff record <proxy-url>/<name>[:TAG|@DIGEST] --output FILE [options] -- <command> [args...]

Mounts the image lazily with a writable overlay in a temporary directory, runs the command in a
chroot there (as root), and writes the chunks it read, in the order it first read them, to FILE: a
prefetch list. 'skiff mount --prefetch FILE' on other nodes fetches those chunks first. Exits with
the command's status; the list is written either way.

Options:
  --output FILE        where to write the prefetch list (required)
  --cache DIR, --cache-size SIZE, --timeout SECONDS, --platform OS/ARCH, --codec CODEC,
  --chunk-size SIZE, --token TOKEN, --user USER, --password PASS, --ca FILE, --http-proxy URL,
  --prefetch all|FILE, --prefetch-rate SIZE, --prefetch-nearby SIZE|auto,
  --no-learned-prefetch, --no-program-prefetch
                       as for 'skiff mount'. Chunks are named by their bytes, so a list serves
                       mounts of any codec but only of the same --chunk-size
  -h, --help           show this help

Example: skiff record http://127.0.0.1:8080/library/python:3.12 --output python.prefetch -- python3 -c 'print(1)'`;

export async function recordCommand(argv: string[]): Promise<number> {
  const dashes = argv.indexOf("--");
  const own = dashes < 0 ? argv : argv.slice(0, dashes);
  const command = dashes < 0 ? [] : argv.slice(dashes + 1);
  const { values, positionals } = parseFlags(own, { ...agentFlags, output: { type: "string" } }, true);
  if (values.help) {
    console.log(recordHelp);
    return 0;
  }
  if (positionals.length !== 1) throw new UsageError("expected an image URL (see --help)");
  if (values.output === undefined) throw new UsageError("--output FILE is required");
  if (command.length === 0) throw new UsageError("expected a command after -- (see --help)");
  const { ref, ...options } = await agentMountOptions(positionals[0]!, values);

  const log = (m: string) => process.stderr.write(`skiff record: ${m}\n`);
  const work = await mkdtemp(join(tmpdir(), "skiff-record-"));
  const { mountLazily } = await import("../../node-agent/src/mount-image-lazily.ts");
  try {
    const mountpoint = join(work, "root");
    const mount = await mountLazily({ ...options, mountpoint, overlayDir: join(work, "overlay"), recordFile: values.output, log });
    let status: number;
    try {
      // Asynchronously: the FUSE requests the command makes are served on this process's thread.
      status = await new Promise<number>((resolve, reject) => {
        const child = spawn("chroot", [mountpoint, ...command], { stdio: "inherit" });
        child.once("error", reject);
        child.once("exit", (code, signal) => resolve(code ?? 128 + (signal ? constants.signals[signal] : 0)));
      });
    } finally {
      await mount.stop();
    }
    log(`recorded ${ref.name}@${mount.manifestDigest} into ${values.output}; the command exited ${status}`);
    return status;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}
