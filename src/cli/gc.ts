// `skiff gc`: garbage collection of a stopped proxy's store (src/store/gc.ts says what is garbage),
// the same sweep a proxy makes when it starts, plus the uploads a crash left and empty directories.
import { FsStore } from "../store/fs.ts";
import { sweepGarbage } from "../store/gc.ts";
import { parseFlags, UsageError } from "./args.ts";
import { formatBytes } from "./progress.ts";

export const gcHelp = `Usage: skiff gc --data DIR [--dry-run]

Removes from a skiff store what nothing can use any more: uploads a crash left unfinished,
converted layers left unpublished by a crash or an abandoned conversion in steps, a converted
layer's bootstrap whose data is gone, records of manifests that are gone, and empty directories.
Prints each object it removes and what it freed. Run it while no 'skiff serve' uses DIR (a proxy
makes the same sweep when it starts, and hourly while it runs).

Options:
  --data DIR   the store directory ('skiff serve --data')
  --dry-run    only print what would be removed
  -h, --help   show this help`;

export async function gcCommand(argv: string[]): Promise<number> {
  const { values } = parseFlags(argv, { data: { type: "string" }, "dry-run": { type: "boolean" } });
  if (values.help) {
    console.log(gcHelp);
    return 0;
  }
  if (values.data === undefined) throw new UsageError("--data DIR is required (see --help)");
  const dryRun = values["dry-run"] ?? false;
  const store = new FsStore(values.data);
  if (!(await store.exists())) throw new Error(`${values.data} is not a directory`);
  const verb = dryRun ? "would remove" : "removed";

  const uploads = await store.uploadsInProgress();
  if (uploads.count > 0) {
    if (!dryRun) await store.init(); // clears the uploads
    console.log(`${verb} ${uploads.count} unfinished uploads (${formatBytes(uploads.bytes)})`);
  }
  const garbage = await sweepGarbage(store, { dryRun });
  for (const g of garbage) console.log(`${verb} ${g.key} (${formatBytes(g.size)}): ${g.why}`);
  const directories = await store.removeEmptyDirectories(dryRun);
  if (directories > 0) console.log(`${verb} ${directories} empty directories`);
  const objects = uploads.count + garbage.length;
  const bytes = uploads.bytes + garbage.reduce((n, g) => n + g.size, 0);
  console.log(`${dryRun ? "would free" : "freed"} ${formatBytes(bytes)} in ${objects} objects`);
  return 0;
}
