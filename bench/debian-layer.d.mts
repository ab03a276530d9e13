// Types of bench/debian-layer.mjs, for the e2e harness that imports it.
export const DEBIAN_MIRROR: string;

export interface DebianLayer {
  tarFile: string;
  gzFile: string;
  tarBytes: number;
  gzBytes: number;
  /** sha256 of the tar. */
  diffId: string;
  /** sha256 of the gzip. */
  digest: string;
}

export function debianLayer(options: {
  cacheDir: string;
  name: string;
  packages: string[];
  suite?: string;
  mirror?: string;
  prune?: string[];
  workDir: string;
  run?: (cmd: string, args: string[], options: { timeoutMs: number }) => Promise<unknown>;
  log?: (message: string) => void;
  timeoutMs?: number;
}): Promise<DebianLayer>;
