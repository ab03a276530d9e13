// When to read the TLS pair again: on request (SIGHUP, wired by the serve command) and when its
// files change. The files are polled rather than watched: renewal tools and Kubernetes secrets
// replace them by rename or swap a symlink, which a watch on the old inode never sees. A poll reads
// both (a few KB every couple of seconds) and compares their bytes, which no coarse mtime or
// same-size rewrite can fool. A pair that fails to read or check is logged and the one in use is
// kept; a change is acted on once both files have held still for a poll, because renewal tools
// write the certificate and the key one after the other.
import { readFile } from "node:fs/promises";
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
  // The files' contents last acted on (at first, those of the pair in use), and a change seen but
  // not yet held still for a poll.
  let settled = stateOf(current.cert, current.key);
  let pending: string | undefined;
  let queue = Promise.resolve();

  const reload = (why: string, seen: string) =>
    (queue = queue.then(async () => {
      settled = seen;
      pending = undefined;
      try {
        const pair = await readTlsPair(files);
        if (pair.cert === inUse.cert && pair.key === inUse.key) return log(`TLS ${why}: certificate unchanged (${pair.summary})`);
        await apply(pair);
        inUse = pair;
        log(`TLS certificate reloaded (${why}): ${pair.summary}`);
      } catch (err) {
        log(`TLS reload (${why}) failed, still serving sha256 ${inUse.fingerprint}: ${(err as Error).message}`);
      }
    }));

  const poll = async () => {
    const now = await filesState(files);
    if (now === settled) pending = undefined;
    else if (now !== pending) pending = now; // changed: wait for it to hold still
    else await reload("files changed", now);
  };
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

/** The files' contents as they are now (or why they can't be read), to compare with a later poll. */
async function filesState(files: TlsFiles): Promise<string> {
  const read = (path: string) => readFile(path, "utf8").catch((err: { code?: string }) => ({ unreadable: err.code }));
  const [cert, key] = await Promise.all([read(files.cert), read(files.key)]);
  return stateOf(cert, key);
}

const stateOf = (cert: unknown, key: unknown) => JSON.stringify([cert, key]);
