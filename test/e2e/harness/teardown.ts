// Teardown for e2e files: stop whatever the harness started, then remove the run directory.
// Use as `afterAll(teardown)` after the file's own afterAll that stops its services gracefully.
// Importing this module also makes SIGINT/SIGTERM/SIGHUP kill the harness's children and remove the
// run directory before the test process dies of the signal, and does the same when the test runner
// that forked this worker goes away mid-file (its IPC channel closes) instead of running on orphaned.
import { killAllChildren, killAllChildrenSync, runningChildren } from "./processes.ts";
import { cleanupWorkdir, hasRunDir, removeWorkdirSync } from "./workdir.ts";

export async function teardown(): Promise<void> {
  await killAllChildren();
  await cleanupWorkdir();
}

// Each instance of this module (one per test file) cleans up its own children and directory; only the
// last handler to run re-raises the signal.
for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
  const onSignal = () => {
    killAllChildrenSync();
    removeWorkdirSync();
    // Die of the same signal unless someone else (the test runner, another file's hook) handles it.
    if (process.listenerCount(sig) === 0) process.kill(process.pid, sig);
  };
  process.once(sig, onSignal);
}

if (typeof process.send === "function") {
  process.once("disconnect", () => {
    if (runningChildren() === 0 && !hasRunDir()) return; // normal end: teardown already ran
    killAllChildrenSync();
    removeWorkdirSync();
    process.exit(1);
  });
}
