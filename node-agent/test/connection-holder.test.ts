// The holders of a mounts daemon's own FUSE connections (fuse/connection-holder.ts), with real
// processes: a shell per set of connections, the newest named in fuse-holder.pid, the others gone;
// the named one becomes the keeper (here a script that reports what it inherited) when the daemon
// lets go, or at once with the stop flag on SIGTERM. Any descriptors do: the holder only keeps them.
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, test } from "vitest";
import { waitFor } from "../../test/e2e/harness/processes.ts";
import { ConnectionHolder, holderFileIn } from "../src/fuse/connection-holder.ts";

// Each test's holder let go, its descriptors closed and its root removed.
const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanups.splice(0).reverse()) c();
});

/** A root, a stand-in keeper that writes what it got to `report`, and two descriptors to hand down. */
function setup() {
  const root = mkdtempSync(join(tmpdir(), "skiff-holder-"));
  cleanups.push(() => rmSync(root, { recursive: true, force: true }));
  const report = join(root, "report.json");
  const keeper = join(root, "keeper.cjs");
  writeFileSync(
    keeper,
    `const fs = require("node:fs");
const held = JSON.parse(process.env.SKIFF_FUSE_HANDED_DOWN);
const open = held.map((c) => { try { return fs.readFileSync(c.fd, "utf8"); } catch { return null; } });
fs.writeFileSync(${JSON.stringify(report)}, JSON.stringify({ pid: process.pid, held, open, stop: process.env.SKIFF_FUSE_STOP ?? null }));`,
  );
  const files = ["a", "b"].map((name) => {
    writeFileSync(join(root, name), `connection ${name}`);
    return openSync(join(root, name), "r");
  });
  const log: string[] = [];
  const holder = new ConnectionHolder({ root, keeperArgs: [keeper], log: (m) => log.push(m) });
  cleanups.push(() => {
    holder.close();
    files.forEach((fd) => closeSync(fd));
  });
  /** The pid the file names as the holder now. */
  const named = () => Number(readFileSync(holderFileIn(root), "utf8"));
  return { report, files, holder, log, named };
}

const alive = (pid: number) => existsSync(`/proc/${pid}`) && !readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.startsWith("Z");

const until = <T>(what: string, probe: () => T | undefined) => waitFor(what, probe, { timeoutMs: 5_000, intervalMs: 50 });

const readReport = (report: string) => (existsSync(report) ? (JSON.parse(readFileSync(report, "utf8")) as { pid: number; held: { id: number; mountpoint: string; fd: number }[]; open: (string | null)[]; stop: string | null }) : undefined);

describe("the holder of a daemon's own connections", () => {
  test("each new set gets a new holder, named in the file; the one before ends without taking over; the last takes over with every descriptor when the daemon lets go", async () => {
    const { report, files, holder, named } = setup();
    holder.hold([{ id: 1, mountpoint: "/m/1", fd: files[0]! }]);
    const first = named();
    holder.hold([
      { id: 1, mountpoint: "/m/1", fd: files[0]! },
      { id: 2, mountpoint: "/m/2", fd: files[1]! },
    ]);
    const second = named();
    expect(second).not.toBe(first);
    await until("the first holder to end", () => (alive(first) ? undefined : true));
    expect(existsSync(report)).toBe(false); // it did not become the keeper
    expect(alive(second)).toBe(true);

    holder.close();
    const r = await until("the keeper's report", () => readReport(report));
    // The same process (exec): the file names it, and it holds both descriptors, renumbered from 3.
    expect(r.pid).toBe(second);
    expect(r.held).toEqual([
      { id: 1, mountpoint: "/m/1", fd: 3 },
      { id: 2, mountpoint: "/m/2", fd: 4 },
    ]);
    expect(r.open).toEqual(["connection a", "connection b"]);
    expect(r.stop).toBe(null);
  });

  test("SIGTERM (a node shutting down) makes it the keeper at once, told to stop", async () => {
    const { report, files, holder, named } = setup();
    holder.hold([{ id: 7, mountpoint: "/m/7", fd: files[0]! }]);
    const pid = named();
    // The shell's trap is set before its first read; give it the moment to start.
    await new Promise((r) => setTimeout(r, 200));
    process.kill(pid, "SIGTERM");
    const r = await until("the keeper's report", () => readReport(report));
    expect([r.pid, r.stop, r.open]).toEqual([pid, "1", ["connection a"]]);
  });

  test("a holder that dies while the daemon lives is replaced", async () => {
    const { files, holder, log, named } = setup();
    holder.hold([{ id: 1, mountpoint: "/m/1", fd: files[0]! }]);
    const first = named();
    process.kill(first, "SIGKILL");
    const next = await until("another holder", () => {
      const pid = named();
      return pid > 0 && pid !== first && alive(pid) ? pid : undefined;
    });
    expect(next).not.toBe(first);
    expect(log.some((m) => m.includes("exited"))).toBe(true);
  });
});
