// What a mount shows of a bootstrap: the merged tree of an image, or one layer as a lowerdir of a
// kernel overlayfs. Shared by both FUSE front ends (fuse-fs.ts over fuse-native, fuse/ over
// /dev/fuse) so that they show the same tree.
import type { Bootstrap } from "../../src/format/decode.ts";
import { FLAG_OPAQUE } from "../../src/format/layout.ts";

/**
 * `image`: an image bootstrap's merged tree. `overlay-layer`: a layer bootstrap as one lowerdir of
 * a kernel overlayfs: whiteouts are shown as overlayfs whiteouts (char 0/0), opaque directories
 * carry `trusted.overlay.opaque=y`; hardlink references to lower layers are left out.
 */
export type ImageView = "image" | "overlay-layer";

/** The image never changes: the kernel may cache attributes, names and pages for as long as it likes. */
export const CACHE_SECONDS = 86_400;
/** Linux's mask of the access mode bits in open(2) flags (Node doesn't export it). */
export const O_ACCMODE = 3;

export interface ViewOf {
  isVisible(inode: number): boolean;
  xattrs(inode: number): Map<string, Uint8Array>;
}

export function viewOf(b: Bootstrap, view: ImageView): ViewOf {
  if (view === "image") return { isVisible: (inode) => visibleInImage(b, inode), xattrs: (inode) => b.xattrs(inode) };
  return { isVisible: (inode) => visibleInLayer(b, inode), xattrs: (inode) => overlayXattrs(b, inode) };
}

/** Whiteouts and hardlink references belong in layer bootstraps only: an image shows none. */
function visibleInImage(b: Bootstrap, inode: number): boolean {
  const type = b.inode(inode).type;
  return type !== "whiteout" && type !== "hardlink-ref";
}

/** overlayfs can't link to a file of another layer, so such a reference is left out of the layer. */
function visibleInLayer(b: Bootstrap, inode: number): boolean {
  return b.inode(inode).type !== "hardlink-ref";
}

const OPAQUE = new Map([["trusted.overlay.opaque", new Uint8Array([0x79])]]); // "y"

/** A layer directory marked opaque tells overlayfs to hide the lower layers' entries below it. */
function overlayXattrs(b: Bootstrap, inode: number): Map<string, Uint8Array> {
  const own = b.xattrs(inode);
  if (!(b.inode(inode).flags & FLAG_OPAQUE)) return own;
  return new Map([...own, ...OPAQUE]);
}
