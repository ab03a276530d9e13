// Types of bench/entry-memory-layer.mjs, for the tests that build its layers.
export function writeNodeModulesLayer(path: string, files: number, root?: string): { entries: number; files: number; digest: string; size: number };
