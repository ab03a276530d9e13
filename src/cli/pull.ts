// `skiff pull`: pulls an image through containerd's CRI image service, as kubelet does, so that a
// node without kubelet gets the same lazy layers from `skiff snapshotter` (node-agent/src/cri).
import { resolve } from "node:path";
import { integerFlag, parseFlags, UsageError } from "./args.ts";
import { Progress } from "./progress.ts";

export const pullHelp = `Usage: skiff pull REF [--address PATH] [--namespace NS] [options]

Pulls REF (e.g. docker.io/library/python:3.12) through containerd's CRI image service, the way kubelet
does. containerd then labels each layer for its CRI snapshotter, so that with 'skiff snapshotter'
configured as that snapshotter (docs/kubernetes.md) the layers are mounted lazily instead of
downloaded. Run the image afterwards with, for example:
  ctr -n k8s.io run --snapshotter skiff REF ID COMMAND

Options:
  --address PATH       containerd's socket (default /run/containerd/containerd.sock)
  --namespace NS       the namespace CRI keeps images in; only k8s.io is possible (default k8s.io)
  --user USER          registry user (with $SKIFF_REGISTRY_PASSWORD)
  --timeout SECONDS    give up after this long (default 600)
  -h, --help           show this help`;

export async function pullCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseFlags(argv, { address: { type: "string" }, namespace: { type: "string" }, user: { type: "string" }, timeout: { type: "string" } }, true);
  if (values.help) {
    console.log(pullHelp);
    return 0;
  }
  if (positionals.length !== 1) throw new UsageError("expected one image reference (see --help)");
  // containerd's CRI plugin keeps its images in k8s.io, whatever the request's namespace says.
  if (values.namespace !== undefined && values.namespace !== "k8s.io") throw new UsageError("--namespace: CRI pulls into k8s.io only");
  const password = process.env.SKIFF_REGISTRY_PASSWORD;
  if (values.user !== undefined && password === undefined) throw new UsageError("--user needs $SKIFF_REGISTRY_PASSWORD");
  const timeoutMs = integerFlag(values.timeout, "timeout", 600, 1, 86_400) * 1000;
  const image = positionals[0]!;
  const { criPullImage } = await import("../../node-agent/src/cri/image-service.ts");
  // CRI's PullImage reports nothing until it is done: show that it is running, and for how long.
  const progress = new Progress();
  const started = Date.now();
  const tick = () => progress.update(`pulling ${image} … ${Math.round((Date.now() - started) / 1000)} s`, true);
  tick();
  const timer = setInterval(tick, 1000);
  try {
    const id = await criPullImage(image, {
      address: resolve(values.address ?? "/run/containerd/containerd.sock"),
      auth: values.user !== undefined ? { username: values.user, password: password! } : undefined,
      timeoutMs,
    });
    console.log(`${image} ${id}`);
    return 0;
  } catch (err) {
    throw new Error(`pull of ${image} failed: ${(err as Error).message}`);
  } finally {
    clearInterval(timer);
    progress.done();
  }
}
