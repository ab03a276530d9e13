// The merge as it was first written, over FsNode trees (model.ts): OverlayFS's rules spelled out
// plainly, an object per entry. src/convert/merge.ts merges over tables to fit a Worker's memory;
// the tests hold its bytes to this one's.
import { newDir, type BootstrapModel, type ChunkRecord, type FsNode } from "../../src/format/model.ts";
import { pathComponents, SkippedEntries } from "../../src/convert/layer-tree.ts";

export interface ReferenceMerge {
  model: BootstrapModel;
  /** Hardlinks whose target no lower layer had. */
  skipped: SkippedEntries;
}

/** `layers` are the layers' trees, bottom first; their files and chunk records become the image's. */
export function mergeModels(layers: Iterable<BootstrapModel>, platform: string): ReferenceMerge {
  const root = newDir();
  const chunks: ChunkRecord[] = [];
  const blobs: BootstrapModel["blobs"] = [];
  const skipped = new SkippedEntries();
  let params: { codec: number; chunkShift: number } | undefined;

  for (const model of layers) {
    if (model.kind !== "layer") throw new Error("only layer bootstraps can be merged");
    params ??= { codec: model.codec, chunkShift: model.chunkShift };
    if (model.codec !== params.codec || model.chunkShift !== params.chunkShift) throw new Error("layers were converted with different parameters");
    if (model.blobs.length !== 1) throw new Error("a layer bootstrap has exactly one data blob");
    const blobIndex = blobs.length;
    blobs.push(model.blobs[0]!);
    const chunkBase = chunks.length;
    for (const c of model.chunks) {
      c.blob = blobIndex;
      chunks.push(c);
    }
    // A file is taken over once, whatever its number of names: hardlinks inside the layer stay one inode.
    const taken = new Set<FsNode>();
    const take = (src: FsNode): FsNode => {
      if (chunkBase > 0 && !taken.has(src)) {
        taken.add(src);
        for (let k = 0; k < src.chunks.length; k++) src.chunks[k]! += chunkBase;
      }
      return src;
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
          children.set(name, take(s));
        }
      }
    };
    if (!model.root.implicit) setMetadata(root, model.root);
    apply(root, model.root, "");
  }
  if (!params) throw new Error("an image needs at least one layer");

  return { model: { kind: "image", codec: params.codec, chunkShift: params.chunkShift, platform, blobs, chunks, root }, skipped };
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
