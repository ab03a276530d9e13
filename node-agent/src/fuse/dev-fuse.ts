// A FUSE connection opened on /dev/fuse and mounted by the kernel's own mount(2) (through
// util-linux `mount -i`, which hands our descriptor to the kernel as `fd=3`), without libfuse. The
// process holding the descriptor holds the connection: the kernel ends it only when the last copy
// closes, which is what lets fuse/keeper keep mounts alive across restarts of the process serving them.
// Its requests are read by request-reader.ts.
import { spawn } from "node:child_process";
import { close, open, writevSync } from "node:fs";
import { access, readFile, writeFile } from "node:fs/promises";
import { release } from "node:os";
import { notifyResend } from "./kernel-abi.ts";

/**
 * The kernel's readahead for the mount. Its default, 128 KiB, makes a sequential reader ask for
 * little at a time, one request after another; 4 MiB keeps about four 1 MiB requests (the most one
 * FUSE request carries here) in flight, so the reader's chunks load while earlier ones are sent.
 * The INIT reply must not ask for less (image-session.ts), or the kernel lowers it again.
 */
export const READAHEAD_BYTES = 4 << 20;

export interface DevFuseMountOptions {
  /** Let users other than root in (default true): containers run as any user. */
  allowOther?: boolean;
  /** Shown as the mount's source in /proc/mounts. */
  fsname?: string;
}

/** Opens /dev/fuse and mounts it read-only at `mountpoint`; returns the connection's descriptor. */
export async function mountDevFuse(mountpoint: string, o: DevFuseMountOptions = {}): Promise<number> {
  const fd = await new Promise<number>((resolve, reject) => open("/dev/fuse", "r+", (err, fd) => (err ? reject(err) : resolve(fd))));
  const options = ["fd=3", "rootmode=40000", `user_id=${process.getuid?.() ?? 0}`, `group_id=${process.getgid?.() ?? 0}`, "default_permissions", "ro"];
  if (o.allowOther ?? true) options.push("allow_other");
  try {
    await run("mount", ["-i", "-t", "fuse.skiff", "-o", options.join(","), o.fsname ?? "skiff", mountpoint], fd);
  } catch (err) {
    close(fd, () => {});
    throw err;
  }
  await raiseReadahead(mountpoint).catch(() => {}); // only an optimisation
  return fd;
}


const FUSECTL = "/sys/fs/fuse/connections";

/**
 * Unmounts and ends the connection. If a process still holds files open there, the mount is
 * detached lazily and the connection aborted (through fusectl), so those files fail with ENOTCONN
 * and the read waiting on the descriptor returns: nothing is left hanging.
 */
export async function unmountDevFuse(mountpoint: string): Promise<void> {
  const dev = await deviceOf(mountpoint).catch(() => undefined);
  // -c: no canonicalizing of the path, which would stat the mount (a request to its server).
  try {
    await run("umount", ["-c", mountpoint]);
  } catch {
    await run("umount", ["-c", "-l", mountpoint]);
    if (dev) await abortConnection(dev);
  }
}

/**
 * The device number (`0:N`) of the filesystem mounted at `mountpoint`, from mountinfo. Never a
 * stat: a stat of the mount is a request to its server, which may be this very process on its way
 * out, or gone (a thread would then wait for an answer forever).
 */
async function deviceOf(mountpoint: string): Promise<string | undefined> {
  const escaped = mountpoint.replace(/[ \t\n\\]/g, (c) => `\\${c.charCodeAt(0).toString(8).padStart(3, "0")}`);
  const lines = (await readFile("/proc/self/mountinfo", "utf8")).split("\n");
  return lines.map((l) => l.split(" ")).findLast((f) => f[4] === escaped)?.[2];
}

/** Aborts the FUSE connection of the filesystem with device `0:N`: its connection is named N in fusectl. */
async function abortConnection(dev: string): Promise<void> {
  const minor = dev.split(":")[1];
  const exists = () => access(`${FUSECTL}/${minor}/abort`).then(() => true, () => false);
  if (!(await exists())) await run("mount", ["-t", "fusectl", "fusectl", FUSECTL]).catch(() => {});
  await writeFile(`${FUSECTL}/${minor}/abort`, "1").catch(() => {});
}

/** Sets the readahead of the filesystem mounted at `mountpoint` (its backing device in sysfs). */
async function raiseReadahead(mountpoint: string): Promise<void> {
  const dev = await deviceOf(mountpoint);
  if (dev) await writeFile(`/sys/class/bdi/${dev}/read_ahead_kb`, String(READAHEAD_BYTES >> 10));
}

/**
 * Writes one reply: `reply`, then the pieces of `body` if given, in one writev (the kernel takes a
 * reply in one write). A reply the kernel no longer waits for (ENOENT: the request was interrupted,
 * or already answered) is dropped; false when the connection is gone.
 */
export function writeReply(fd: number, reply: Uint8Array, body: readonly Uint8Array[] = []): boolean {
  return writeReplyParts(fd, [reply, ...body]);
}

/** writeReply of a reply in pieces (as it came from the keeper's socket), in one writev. */
export function writeReplyParts(fd: number, parts: Uint8Array[]): boolean {
  try {
    writevSync(fd, parts);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "ENOENT";
  }
}

/**
 * Whether this kernel queues again what a dead server had read (FUSE_NOTIFY_RESEND, Linux 6.9):
 * only then may the serving process read a connection itself, with the keeper holding a copy.
 */
export function kernelResends(kernelRelease = release()): boolean {
  const [major = 0, minor = 0] = kernelRelease.split(/[.-]/).map(Number);
  return major > 6 || (major === 6 && minor >= 9);
}

/** Sends FUSE_NOTIFY_RESEND (kernel-abi.ts) on the connection; false if the kernel refused it. */
export function resendUnanswered(fd: number): boolean {
  try {
    writevSync(fd, [notifyResend()]);
    return true;
  } catch {
    return false;
  }
}

/** Closes a connection nobody reads (a reader closes its own: RequestReader.close). */
export function closeDevFuse(fd: number): Promise<void> {
  return new Promise((resolve) => close(fd, () => resolve()));
}

function run(cmd: string, args: string[], fd?: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: fd === undefined ? ["ignore", "ignore", "pipe"] : ["ignore", "ignore", "pipe", fd] });
    let stderr = "";
    child.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
    child.on("error", reject);
    child.on("close", (code) => (code === 0 ? resolve() : reject(new Error(`${cmd} ${args.join(" ")}: ${stderr.trim() || `exit ${code}`}`))));
  });
}
