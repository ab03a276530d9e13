// The config.toml of a private containerd: root, state, sockets and opt under one directory, the
// snapshotters that can't run here disabled, optionally proxy snapshotters (the stargz one, for
// bench:cold-start; skiff's), and optionally the CRI plugin (off by default), set up the way a
// kubelet node has it but with everything it writes inside the same directory. Shared by the
// benchmarks and the e2e tests' harness.
import { join } from "node:path";

/** Where Debian's containernetworking-plugins install the CNI plugins. */
export const DEBIAN_CNI_BIN_DIR = "/usr/lib/cni";

/**
 * dir: holds root/, state/ and opt/ (and with `cri`, runc/ for runc's state); address: the gRPC
 * socket (ttrpc's is beside it); snapshotters: proxy snapshotter name → its socket.
 *
 * cri (omitted: the CRI plugin is disabled):
 *   sandboxImage: the pause image of every pod;
 *   snapshotter: the snapshotter CRI unpacks images into and runs containers on (default overlayfs);
 *     layer descriptors' annotations reach it as snapshot labels (disable_snapshot_annotations = false);
 *   cniConfDir: the directory of the CNI network config (see cniBridgeConflist);
 *   cniBinDir: the CNI plugins (default Debian's);
 *   registryConfigPath: a hosts.toml directory (`<host:port>/hosts.toml`), e.g. for plain-http registries.
 */
export function containerdConfig({ dir, address, snapshotters = {}, cri }) {
  const q = (s) => JSON.stringify(s); // a JSON string is a valid TOML basic string
  const disabled = [
    ...(cri === undefined ? ["io.containerd.grpc.v1.cri"] : []),
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.zfs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.tracing.processor.v1.otlp",
    "io.containerd.internal.v1.tracing",
  ];
  return [
    "version = 2",
    `root = ${q(join(dir, "root"))}`,
    `state = ${q(join(dir, "state"))}`,
    "disabled_plugins = [",
    ...disabled.map((p) => `  ${q(p)},`),
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
    ...(cri === undefined ? [] : criConfig(dir, cri, q)),
    ...Object.entries(snapshotters).flatMap(([name, socket]) => [`[proxy_plugins.${/^[A-Za-z0-9_-]+$/.test(name) ? name : q(name)}]`, '  type = "snapshot"', `  address = ${q(socket)}`, ""]),
  ].join("\n");
}

function criConfig(dir, { sandboxImage, snapshotter = "overlayfs", cniConfDir, cniBinDir = DEBIAN_CNI_BIN_DIR, registryConfigPath }, q) {
  if (typeof sandboxImage !== "string" || sandboxImage === "") throw new Error("cri.sandboxImage is required");
  if (typeof cniConfDir !== "string" || cniConfDir === "") throw new Error("cri.cniConfDir is required");
  // The plugin's own root and state are <root>/io.containerd.grpc.v1.cri and <state>/…, inside dir
  // like everything else; so are the pods' network namespaces (netns_mounts_under_state_dir) and
  // runc's state (the runc shim's Root, by default under /run/containerd/runc).
  return [
    '[plugins."io.containerd.grpc.v1.cri"]',
    `  sandbox_image = ${q(sandboxImage)}`,
    "  netns_mounts_under_state_dir = true",
    // A host with AppArmor would otherwise get CRI's default profile loaded into its kernel.
    "  disable_apparmor = true",
    // Pods ask for oom_score_adj -998; lowering it needs CAP_SYS_RESOURCE, which a root in a
    // container or VM sandbox may lack (runc then fails with "can't get final child's PID from
    // pipe"). Restricted, no container's score goes below containerd's own.
    "  restrict_oom_score_adj = true",
    '  stream_server_address = "127.0.0.1"',
    '  stream_server_port = "0"',
    "",
    '[plugins."io.containerd.grpc.v1.cri".containerd]',
    `  snapshotter = ${q(snapshotter)}`,
    "  disable_snapshot_annotations = false",
    '  default_runtime_name = "runc"',
    "",
    '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]',
    '  runtime_type = "io.containerd.runc.v2"',
    "",
    '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]',
    `  Root = ${q(join(dir, "runc"))}`,
    "  SystemdCgroup = false",
    "",
    '[plugins."io.containerd.grpc.v1.cri".cni]',
    `  bin_dir = ${q(cniBinDir)}`,
    `  conf_dir = ${q(cniConfDir)}`,
    "  max_conf_num = 1",
    "",
    '[plugins."io.containerd.grpc.v1.cri".registry]',
    `  config_path = ${q(registryConfigPath ?? join(dir, "certs.d"))}`,
    "",
  ];
}

/**
 * A CNI network config list for pods: a Linux bridge `bridge` with addresses from host-local in
 * `subnet` (its allocations kept in `ipamDataDir`). No gateway and no masquerading: a pod reaches
 * nothing beyond the bridge, and the host's forwarding and iptables are left alone. The loopback
 * interface is containerd's own business (it runs the loopback plugin for every pod itself).
 */
export function cniBridgeConflist({ name, bridge, subnet, ipamDataDir }) {
  if (bridge.length > 15) throw new Error(`bridge name ${bridge} is longer than 15 characters`);
  return `${JSON.stringify(
    {
      cniVersion: "1.0.0",
      name,
      plugins: [
        {
          type: "bridge",
          bridge,
          isGateway: false,
          ipMasq: false,
          hairpinMode: false,
          ipam: { type: "host-local", ranges: [[{ subnet }]], dataDir: ipamDataDir },
        },
      ],
    },
    null,
    2,
  )}\n`;
}
