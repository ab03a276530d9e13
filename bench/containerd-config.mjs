// The config.toml of a private containerd: root, state, sockets and opt under one directory, the CRI
// plugin and the snapshotters that can't run here disabled, and optionally proxy snapshotters (the
// stargz one, for bench:cold-start). Shared by the benchmarks and the e2e tests' harness.
import { join } from "node:path";

/**
 * dir: holds root/, state/ and opt/; address: the gRPC socket (ttrpc's is beside it);
 * snapshotters: proxy snapshotter name → its socket.
 */
export function containerdConfig({ dir, address, snapshotters = {} }) {
  const q = (s) => JSON.stringify(s); // a JSON string is a valid TOML basic string
  return [
    "version = 2",
    `root = ${q(join(dir, "root"))}`,
    `state = ${q(join(dir, "state"))}`,
    "disabled_plugins = [",
    '  "io.containerd.grpc.v1.cri",',
    '  "io.containerd.snapshotter.v1.btrfs",',
    '  "io.containerd.snapshotter.v1.zfs",',
    '  "io.containerd.snapshotter.v1.devmapper",',
    '  "io.containerd.snapshotter.v1.aufs",',
    '  "io.containerd.tracing.processor.v1.otlp",',
    '  "io.containerd.internal.v1.tracing",',
    "]",
    "",
    "[grpc]",
    `  address = ${q(address)}`,
    "",
    "[ttrpc]",
    `  address = ${q(`${address}.ttrpc`)}`,
    "",
    "[debug]",
    '  address = ""',
    '  level = "info"',
    "",
    "[metrics]",
    '  address = ""',
    "",
    '[plugins."io.containerd.internal.v1.opt"]',
    `  path = ${q(join(dir, "opt"))}`,
    "",
    ...Object.entries(snapshotters).flatMap(([name, socket]) => [`[proxy_plugins.${name}]`, '  type = "snapshot"', `  address = ${q(socket)}`, ""]),
  ].join("\n");
}
