// Teardown for e2e files: stop whatever the harness started, then remove the run directory.
// Use as `afterAll(teardown)` after the file's own afterAll that stops its services gracefully.
import { killAllChildren } from "./processes.ts";
import { cleanupWorkdir } from "./workdir.ts";

export async function teardown(): Promise<void> {
  await killAllChildren();
  await cleanupWorkdir();
}
