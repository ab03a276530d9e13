// Types of bench/containerd-config.mjs, for the e2e harness that imports it.
export function containerdConfig(options: { dir: string; address: string; snapshotters?: Record<string, string> }): string;
