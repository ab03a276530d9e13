// The bootstrap format: the one module the proxy and the node agent share (docs/format.md).
export * from "./layout.ts";
export * from "./model.ts";
export { encodeBootstrap } from "./encode.ts";
export { Bootstrap, BootstrapError, type DirEntry, type Inode } from "./decode.ts";
