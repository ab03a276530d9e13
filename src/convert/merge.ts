// Merges layer bootstraps, bottom first, into one image bootstrap — the rootfs OverlayFS (or GNU
// tar extracting the layers in order with whiteout rules) would present. Layer i's data blob becomes
// blob i of the image; chunk records are concatenated, so merging never touches chunk data.
import { newDir, type BootstrapModel, type ChunkRecord, type FsNode } from "../format/model.ts";
import { pathComponents, SkippedEntries } from "./layer-tree.ts";

export interface MergeResult {
  model: BootstrapModel;
  /** Hardlinks whose target no lower layer had. */
  skipped: SkippedEntries;
}

/** `layers` are the layers' trees: a fresh conversion's own, or a stored bootstrap's `toModel()`. */
export function mergeLayers(layers: BootstrapModel[], platform: string): MergeResult {
  if (layers.length === 0) throw new Error("an image needs at least one layer");
  const first = layers[0]!;
  for (const l of layers) {
    if (l.kind !== "layer") throw new Error("only layer bootstraps can be merged");
    if (l.codec !== first.codec || l.chunkShift !== first.chunkShift) throw new Error("layers were converted with different parameters");
  }
  const root = newDir();
  const chunks: ChunkRecord[] = [];
  const blobs: BootstrapModel["blobs"] = [];
  const skipped = new SkippedEntries();

  layers.forEach((model, blobIndex) => {
    if (model.blobs.length !== 1) throw new Error("a layer bootstrap has exactly one data blob");
    blobs.push(model.blobs[0]!);
    const chunkBase = chunks.length;
    for (const c of model.chunks) chunks.push({ ...c, blob: blobIndex });
    // One image node per layer node, so hardlinks inside the layer stay one inode.
    const copies = new Map<FsNode, FsNode>();
    const copy = (src: FsNode): FsNode => {
      let node = copies.get(src);
      if (!node) {
        node = { ...src, xattrs: new Map(src.xattrs), chunks: src.chunks.map((c) => c + chunkBase) };
        delete node.children;
        delete node.opaque;
        delete node.implicit;
        copies.set(src, node);
      }
      return node;
    };

    const apply = (dst: FsNode, src: FsNode, path: string) => {
      const children = dst.children!;
      if (src.opaque) children.clear();
      for (const [name, s] of src.children!) if (s.type === "whiteout") children.delete(name);
      for (const [name, s] of src.children!) {
        const childPath = `${path}/${name}`;
        if (s.type === "whiteout") continue;
        if (s.type === "dir") {
          let d = children.get(name);
          if (d?.type !== "dir") {
            d = newDir();
            children.set(name, d);
          }
          if (!s.implicit) setMetadata(d, s);
          apply(d, s, childPath);
        } else if (s.type === "hardlink-ref") {
          const target = find(root, s.target!);
          if (target && target.type !== "dir") children.set(name, target);
          else skipped.add(childPath, `hardlink target /${s.target} is not a file in a lower layer`);
        } else {
          children.set(name, copy(s));
        }
      }
    };
    if (!model.root.implicit) setMetadata(root, model.root);
    apply(root, model.root, "");
  });

  return { model: { kind: "image", codec: first.codec, chunkShift: first.chunkShift, platform, blobs, chunks, root }, skipped };
}

function setMetadata(dst: FsNode, src: FsNode): void {
  dst.perm = src.perm;
  dst.uid = src.uid;
  dst.gid = src.gid;
  dst.mtime = src.mtime;
  dst.mtimeNsec = src.mtimeNsec;
  dst.xattrs = new Map(src.xattrs);
}

function find(root: FsNode, path: string): FsNode | null {
  let node: FsNode | undefined = root;
  for (const part of pathComponents(path) ?? []) {
    if (node?.type !== "dir") return null;
    node = node.children!.get(part);
  }
  return node && node !== root ? node : null;
}
