// The `skiff` command: one entry, one subcommand per module.
import { version } from "../version.ts";
import { UsageError } from "./args.ts";
import type { StartServer } from "./serve.ts";

// Commands load on demand, so `skiff convert` does not pay for the HTTP server's modules.
const commands: Record<string, { summary: string; run: (argv: string[], startServer?: StartServer) => Promise<number> }> = {
  serve: { summary: "run the pull-through registry mirror", run: async (argv, startServer) => (await import("./serve.ts")).serveCommand(argv, startServer) },
  convert: {
    summary: "convert an image from an OCI layout into skiff's chunked format",
    run: async (argv) => (await import("./convert.ts")).convertCommand(argv),
  },
  inspect: {
    summary: "show a converted image's bootstrap: summary and file listing",
    run: async (argv) => (await import("./inspect.ts")).inspectCommand(argv),
  },
  mount: {
    summary: "mount an image from a skiff proxy lazily over FUSE (Node agent)",
    run: async (argv) => (await import("./mount.ts")).mountCommand(argv),
  },
  record: {
    summary: "run a command over a lazy mount and write the chunks it read as a prefetch list",
    run: async (argv) => (await import("./record.ts")).recordCommand(argv),
  },
  snapshotter: {
    summary: "containerd's remote snapshotter: images pulled through CRI run from lazy layers (Node agent)",
    run: async (argv) => (await import("./snapshotter.ts")).snapshotterCommand(argv),
  },
  pull: {
    summary: "pull an image through containerd's CRI, as kubelet does, so 'skiff snapshotter' serves it lazily",
    run: async (argv) => (await import("./pull.ts")).pullCommand(argv),
  },
  umount: { summary: "unmount what 'skiff mount' mounted", run: async (argv) => (await import("./mount.ts")).umountCommand(argv) },
  extract: {
    summary: "write a converted image's root filesystem into a directory, verifying every chunk",
    run: async (argv) => (await import("./extract.ts")).extractCommand(argv),
  },
  gc: { summary: "remove what nothing uses from a stopped proxy's store", run: async (argv) => (await import("./gc.ts")).gcCommand(argv) },
  "check-ranges": { summary: "probe a blob URL for HTTP Range correctness (RFC 9110)", run: async (argv) => (await import("./check-ranges.ts")).checkRangesCommand(argv) },
  bench: { summary: "load-test a running registry: 'bench ranges' checks every range answer", run: async (argv) => (await import("./bench.ts")).benchCommand(argv) },
};

const help = `Usage: skiff <command> [options]

skiff ${version}: an OCI registry mirror that verifies and caches what it serves.

Commands:
${Object.entries(commands)
  .map(([name, c]) => `  ${name.padEnd(14)}${c.summary}`)
  .join("\n")}

Run 'skiff <command> --help' for a command's options.`;

/** Runs one command; `serve` starts its server with `startServer` (the Deno CLI's), else on Node. */
export async function main(argv: string[], startServer?: StartServer): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === "--help" || name === "-h" || name === "help") {
    console.log(help);
    return name === undefined ? 2 : 0;
  }
  if (name === "--version") {
    console.log(version);
    return 0;
  }
  const command = commands[name];
  if (!command) {
    process.stderr.write(`skiff: unknown command ${JSON.stringify(name)} (see 'skiff --help')\n`);
    return 2;
  }
  try {
    return await command.run(rest, startServer);
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`skiff ${name}: ${err.message}\n`);
      return 2;
    }
    // Bad input (a corrupt layer, a missing file): one line naming the command, exit status 1.
    process.stderr.write(`skiff ${name}: ${err instanceof Error ? err.message : String(err)}\n`);
    return 1;
  }
}
