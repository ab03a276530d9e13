// The snapshots gRPC service over a Snapshotter, on a unix socket for containerd's proxy_plugins.
// Errors travel as the gRPC codes containerd's errdefs maps back (NotFound, AlreadyExists, …).
import { Server, ServerCredentials, status, type sendUnaryData, type ServerUnaryCall, type ServerWritableStream, type UntypedServiceImplementation } from "@grpc/grpc-js";
import { rm } from "node:fs/promises";
import { FilterError } from "./filters.ts";
import { SNAPSHOTS_SERVICE, type Info } from "./snapshots-api.ts";
import { SnapshotError, type Snapshotter } from "./snapshotter.ts";

const CODES = {
  NOT_FOUND: status.NOT_FOUND,
  ALREADY_EXISTS: status.ALREADY_EXISTS,
  FAILED_PRECONDITION: status.FAILED_PRECONDITION,
  INVALID_ARGUMENT: status.INVALID_ARGUMENT,
} as const;

// List answers in pages, as containerd's own service does, so that no message nears gRPC's 4 MiB cap.
const LIST_PAGE = 100;

type Req = Record<string, unknown> & { key: string; parent: string; name: string; labels: Record<string, string> };

export interface SnapshotsServer {
  close(): Promise<void>;
}

/** Serves `snapshotter` at the unix socket `address` (a stale socket file is replaced). */
export async function serveSnapshots(snapshotter: Snapshotter, address: string, log: (message: string) => void): Promise<SnapshotsServer> {
  const unary =
    <T>(method: string, fn: (req: Req) => T | Promise<T>) =>
    (call: ServerUnaryCall<Req, unknown>, callback: sendUnaryData<unknown>) => {
      Promise.resolve()
        .then(() => fn(call.request))
        .then(
          (result) => callback(null, result ?? {}),
          (err: Error) => callback(toStatus(err, method, call.request, log)),
        );
    };

  const impl: UntypedServiceImplementation = {
    Prepare: unary("Prepare", async (r) => ({ mounts: await snapshotter.prepare(r.key, r.parent, r.labels) })),
    View: unary("View", async (r) => ({ mounts: await snapshotter.view(r.key, r.parent, r.labels) })),
    Mounts: unary("Mounts", (r) => ({ mounts: snapshotter.mounts(r.key) })),
    Commit: unary("Commit", (r) => snapshotter.commit(r.name, r.key, r.labels)),
    Remove: unary("Remove", (r) => snapshotter.remove(r.key)),
    Stat: unary("Stat", (r) => ({ info: snapshotter.stat(r.key) })),
    Update: unary("Update", async (r) => {
      const info = r.info as Info;
      const mask = (r.update_mask as { paths?: string[] } | null)?.paths ?? [];
      return { info: await snapshotter.update(info, mask) };
    }),
    Usage: unary("Usage", (r) => snapshotter.usage(r.key)),
    Cleanup: unary("Cleanup", () => snapshotter.cleanup()),
    List: (call: ServerWritableStream<Req, unknown>) => {
      try {
        const infos = snapshotter.list((call.request.filters as string[] | undefined) ?? []);
        for (let i = 0; i < infos.length; i += LIST_PAGE) call.write({ info: infos.slice(i, i + LIST_PAGE) });
        call.end();
      } catch (err) {
        call.destroy(Object.assign(new Error((err as Error).message), toStatus(err as Error, "List", call.request, log)));
      }
    },
  };

  const server = new Server();
  server.addService(SNAPSHOTS_SERVICE, impl);
  await rm(address, { force: true });
  await new Promise<void>((resolve, reject) =>
    server.bindAsync(`unix://${address}`, ServerCredentials.createInsecure(), (err) => (err ? reject(new Error(`cannot listen on ${address}: ${err.message}`)) : resolve())),
  );
  return {
    close: () =>
      new Promise<void>((resolve) => {
        const timer = setTimeout(() => server.forceShutdown(), 5_000);
        server.tryShutdown(() => {
          clearTimeout(timer);
          resolve();
        });
      }),
  };
}

function toStatus(err: Error, method: string, req: Req, log: (message: string) => void): { code: number; details: string } {
  if (err instanceof SnapshotError) return { code: CODES[err.code], details: err.message };
  if (err instanceof FilterError) return { code: status.INVALID_ARGUMENT, details: err.message };
  log(`${method} ${req.key ?? req.name ?? ""}: ${err.message}`);
  return { code: status.UNKNOWN, details: `${method}: ${err.message}` };
}
