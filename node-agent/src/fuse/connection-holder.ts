// Copies of the connections a mounts daemon reads itself, held by a process it starts that becomes a
// FUSE keeper if the daemon goes, so that they outlive it (fuse/keeper.ts says what the keeper
// then does with them).
//
// A descriptor travels between Node processes only from parent to child, when the child starts, so
// each change to the daemon's set of connections starts a new holder that inherits all of them;
// the file `fuse-holder.pid` names the one that holds them now. A holder is a shell waiting on its
// stdin, whose other end only the daemon has: it ends when the daemon exits or has started a newer
// holder. Then the holder the file names becomes the keeper (exec, same pid, same descriptors) and
// takes over; the others end. A shell starts in a millisecond where a keeper takes 180 ms of CPU,
// and a pull mounts its layers while the container is about to start.
import { spawn, type ChildProcess } from "node:child_process";
import { closeSync, existsSync, openSync, renameSync, writeFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { errorMessage } from "../../../src/util/error-message.ts";
import { KEEPER_THREADS, type HandedDown, type KeeperOptions } from "./keeper.ts";

/** How the daemon tells a keeper what it inherited: `[{ id, mountpoint, fd }]`. */
const HANDED_DOWN_ENV = "SKIFF_FUSE_HANDED_DOWN";
/** A holder that died is replaced after this long (it should not die: bounded retries). */
const RESTART_MS = 1_000;
/**
 * The holder: waits for the end of its stdin, then becomes the keeper if the file in
 * SKIFF_FUSE_HOLDER_FILE names it (`$$`, its pid, which exec keeps). Only shell builtins until then.
 * SIGTERM (a node shutting down) makes it the keeper at once, told to unmount what it holds, as a
 * keeper stopped with SIGTERM does.
 */
const HOLDER_SCRIPT = [
  `trap 'export SKIFF_FUSE_STOP=1; exec "$@"' TERM`,
  "read -r _",
  'read -r holder < "$SKIFF_FUSE_HOLDER_FILE"',
  '[ "$holder" = "$$" ] && exec "$@"',
].join("\n");

/** The shell a holder runs in. */
const SHELL = "/bin/sh";

/** Whether this host can start holders (it has a POSIX shell). */
export const canHoldCopies = () => existsSync(SHELL);

/** The file naming the keeper that holds a daemon's own connections now. */
export const holderFileIn = (root: string) => join(root, "fuse-holder.pid");

export interface ConnectionHolderOptions {
  root: string;
  /** argv (after node) that starts a FUSE keeper. */
  keeperArgs: string[];
  log: (message: string) => void;
}

/** The daemon's side: keeps one holder of copies of exactly the connections it is given. */
export class ConnectionHolder {
  readonly #o: ConnectionHolderOptions;
  #current: ChildProcess | undefined;
  #connections: HandedDown[] = [];
  #closed = false;
  #restart: NodeJS.Timeout | undefined;

  constructor(o: ConnectionHolderOptions) {
    this.#o = o;
  }

  /** Has a new holder keep `connections` (descriptors of this process), and the one before let go. */
  hold(connections: HandedDown[]): void {
    if (this.#closed) return;
    clearTimeout(this.#restart);
    this.#connections = connections;
    const previous = this.#current;
    let next: ChildProcess | undefined;
    if (connections.length > 0) {
      try {
        next = this.#start(connections);
      } catch (err) {
        this.#o.log(`starting a holder of ${connections.length} FUSE connections: ${errorMessage(err)}`);
        this.#restartSoon();
      }
    }
    // Named before the previous one is let go: whichever the file names takes over if this process dies.
    const file = holderFileIn(this.#o.root);
    try {
      writeFileSync(`${file}.tmp`, next?.pid ? String(next.pid) : "");
      renameSync(`${file}.tmp`, file);
    } catch (err) {
      // The previous holder stays named, and holds all but the newest connections.
      this.#o.log(`naming the holder of the FUSE connections: ${errorMessage(err)}`);
    }
    this.#current = next;
    previous?.stdin?.end();
  }

  /**
   * Lets the current holder take over now (the daemon stops on purpose): call once this process
   * no longer reads the connections.
   */
  close(): void {
    this.#closed = true;
    clearTimeout(this.#restart);
    this.#current?.stdin?.end();
  }

  #start(connections: HandedDown[]): ChildProcess {
    const log = openSync(join(this.#o.root, "fuse-keeper.log"), "a");
    try {
      const inherited = connections.map((c, i) => ({ ...c, fd: 3 + i }));
      // A small young generation: the keeper only passes buffers along, and they die young.
      const keeper = [process.execPath, "--max-semi-space-size=1", ...this.#o.keeperArgs];
      const child = spawn(SHELL, ["-c", HOLDER_SCRIPT, "skiff-fuse-holder", ...keeper], {
        detached: true,
        stdio: ["pipe", log, log, ...connections.map((c) => c.fd)],
        env: {
          ...process.env,
          UV_THREADPOOL_SIZE: String(KEEPER_THREADS),
          SKIFF_FUSE_HOLDER_FILE: holderFileIn(this.#o.root),
          [HANDED_DOWN_ENV]: JSON.stringify(inherited),
        },
      });
      child.unref();
      (child.stdin as unknown as { unref?: () => void } | null)?.unref?.();
      child.stdin?.on("error", () => {});
      child.on("error", (err) => this.#o.log(`the holder of the FUSE connections: ${errorMessage(err)}`));
      child.on("exit", (code, signal) => {
        if (this.#current !== child || this.#closed) return;
        this.#o.log(`the holder of this daemon's FUSE connections exited (${signal ?? code}); starting another`);
        this.#current = undefined;
        this.#restartSoon();
      });
      return child;
    } finally {
      closeSync(log);
    }
  }

  #restartSoon(): void {
    this.#restart = setTimeout(() => this.hold(this.#connections), RESTART_MS);
    this.#restart.unref();
  }
}

/**
 * In a keeper process: the connections its daemon handed down, if it was started to hold them,
 * and whether it takes them over once its stdin ends (see the top of this file).
 */
export function handedDownToThisProcess(root: string): KeeperOptions["handedDown"] {
  const text = process.env[HANDED_DOWN_ENV];
  if (!text) return undefined;
  delete process.env[HANDED_DOWN_ENV];
  const connections = JSON.parse(text) as HandedDown[];
  const stopAtOnce = process.env.SKIFF_FUSE_STOP === "1";
  delete process.env.SKIFF_FUSE_STOP;
  const takeOver = new Promise<boolean>((resolve) => {
    const settle = () =>
      void readFile(holderFileIn(root), "utf8").then(
        (pid) => resolve(pid.trim() === String(process.pid)),
        () => resolve(false),
      );
    process.stdin.once("end", settle);
    process.stdin.once("error", settle);
    process.stdin.on("data", () => {});
  });
  return { connections, takeOver, stopAtOnce };
}
