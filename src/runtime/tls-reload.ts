// When to read the TLS pair again: on request (SIGHUP, wired by the serve command) and when its
// files change. The files are polled rather than watched: renewal tools and Kubernetes secrets
// replace them by rename or swap a symlink, which a watch on the old inode never sees; two stats
// every couple of seconds cost nothing. A pair that fails to read or check is logged and the one in
// use is kept; a change is acted on once both files have held still for a poll, because renewal
// tools write the certificate and the key one after the other.
import { stat } from "node:fs/promises";
import { readTlsPair, type TlsFiles, type TlsPair } from "./tls-pair.ts";

export interface TlsReloader {
  /** Reads the pair now and applies it if it checks out; `why` goes in the log line. */
  reload(why: string): Promise<void>;
  stop(): void;
}

export const TLS_POLL_MS = 2_000;

/**
 * Watches `files`, whose pair `current` is in use, and hands every good new pair to `apply`.
 * `apply` may throw (the runtime could not take the pair): that is logged like a bad pair.
 */
export function watchTlsPair(
  files: TlsFiles,
  current: TlsPair,
  apply: (pair: TlsPair) => void | Promise<void>,
  log: (message: string) => void,
  pollMs = TLS_POLL_MS,
): TlsReloader {
  let inUse = current;
  // The files' state last acted on, and a change seen but not yet held still for a poll.
  let settled: string | undefined;
  let pending: string | undefined;
  let queue = Promise.resolve();

  const reload = (why: string, seen: string) =>
    (queue = queue.then(async () => {
      settled = seen;
      pending = undefined;
      try {
        const pair = await readTlsPair(files);
        if (pair.fingerprint === inUse.fingerprint && pair.key === inUse.key) return log(`TLS ${why}: certificate unchanged (${pair.summary})`);
        await apply(pair);
        inUse = pair;
        log(`TLS certificate reloaded (${why}): ${pair.summary}`);
      } catch (err) {
        log(`TLS reload (${why}) failed, still serving sha256 ${inUse.fingerprint}: ${(err as Error).message}`);
      }
    }));

  const poll = async () => {
    const now = await filesState(files);
    if (settled === undefined) settled = now; // the state the first pair was read in
    else if (now === settled) pending = undefined;
    else if (now !== pending) pending = now; // changed: wait for it to hold still
    else await reload("files changed", now);
  };
  void poll();
  let polling = false;
  const timer = setInterval(() => {
    if (polling) return;
    polling = true;
    poll().finally(() => (polling = false));
  }, pollMs);

  return {
    reload: async (why) => reload(why, await filesState(files)),
    stop: () => clearInterval(timer),
  };
}

/** What tells a file's new version from the old: inode, size, mtime (symlinks followed). */
async function filesState(files: TlsFiles): Promise<string> {
  const states = await Promise.all(
    [files.cert, files.key].map((path) =>
      stat(path).then(
        (s) => `${s.ino}:${s.size}:${s.mtimeMs}`,
        (err: { code?: string }) => `missing:${err.code}`,
      ),
    ),
  );
  return states.join("|");
}
