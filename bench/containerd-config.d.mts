// Types of bench/containerd-config.mjs, for the e2e harness that imports it.
export const DEBIAN_CNI_BIN_DIR: string;

export interface CriConfigOptions {
  sandboxImage: string;
  snapshotter?: string;
  cniConfDir: string;
  cniBinDir?: string;
  registryConfigPath?: string;
}

export function containerdConfig(options: {
  dir: string;
  address: string;
  snapshotters?: Record<string, string>;
  cri?: CriConfigOptions;
}): string;

export function cniBridgeConflist(options: { name: string; bridge: string; subnet: string; ipamDataDir: string }): string;
