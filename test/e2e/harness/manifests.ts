// The image's build files and the Kubernetes manifest (deploy/), as tests read them: the manifest
// parsed by a real YAML parser (PyYAML, Debian's python3-yaml; skiff has no YAML library), and its
// skiff container, pod and volumes picked out.
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

export const REPO = fileURLToPath(new URL("../../../", import.meta.url));
export const BUILD_SCRIPT = `${REPO}deploy/image/build.sh`;
export const CONTAINERFILE = `${REPO}deploy/image/Containerfile`;
export const MANIFEST = `${REPO}deploy/kubernetes/skiff.yaml`;

// Loosely typed on purpose: the tests check the shape.
export type K8sObject = { apiVersion: string; kind: string; metadata: { name: string; labels?: Record<string, string> }; [key: string]: any };

/** Every document of a YAML file, as JSON values. */
export function parseYamlDocuments(path: string): unknown[] {
  const r = spawnSync("python3", ["-c", "import json, sys, yaml; json.dump(list(yaml.safe_load_all(sys.stdin)), sys.stdout)"], {
    input: readFileSync(path),
    encoding: "utf8",
    timeout: 30_000,
  });
  if (r.status !== 0) throw new Error(`cannot parse ${path} as YAML (python3 with python3-yaml needed): ${r.error?.message ?? r.stderr}`);
  return JSON.parse(r.stdout) as unknown[];
}

export interface SkiffManifest {
  objects: K8sObject[];
  byKind: (kind: string) => K8sObject;
  deployment: K8sObject;
  pod: any;
  container: any;
  /** The ConfigMap holding the config file the container's --config names, and that file's key. */
  configMap: K8sObject;
  configKey: string;
  /** The container's --config path and the mount path of its directory. */
  configPath: string;
  configMountPath: string;
  storeMountPath: string;
  /** The container's args after `--config PATH` is taken out. */
  argsWithoutConfig: string[];
}

export function loadSkiffManifest(path = MANIFEST): SkiffManifest {
  const objects = parseYamlDocuments(path).filter((o) => o !== null) as K8sObject[];
  const byKind = (kind: string): K8sObject => {
    const found = objects.filter((o) => o.kind === kind);
    if (found.length !== 1) throw new Error(`${path}: expected one ${kind}, found ${found.length}`);
    return found[0]!;
  };
  const deployment = byKind("Deployment");
  const pod = deployment.spec.template.spec;
  const container = pod.containers.find((c: any) => c.name === "skiff");
  if (container === undefined) throw new Error(`${path}: the Deployment has no container named skiff`);
  const args: string[] = container.args ?? [];
  const at = args.indexOf("--config");
  if (at < 0 || at + 1 >= args.length) throw new Error(`${path}: the skiff container's args name no --config`);
  const configPath = args[at + 1]!;
  const mountOf = (volumeName: (v: any) => boolean): string => {
    const volume = pod.volumes.find(volumeName);
    const mount = container.volumeMounts.find((m: any) => m.name === volume?.name);
    if (mount === undefined) throw new Error(`${path}: no mounted volume of that kind`);
    return mount.mountPath;
  };
  const configMap = byKind("ConfigMap");
  const configMountPath = mountOf((v) => v.configMap?.name === configMap.metadata.name);
  const storeMountPath = mountOf((v) => v.persistentVolumeClaim?.claimName === byKind("PersistentVolumeClaim").metadata.name);
  return {
    objects,
    byKind,
    deployment,
    pod,
    container,
    configMap,
    configKey: configPath.slice(configMountPath.length + 1),
    configPath,
    configMountPath,
    storeMountPath,
    argsWithoutConfig: [...args.slice(0, at), ...args.slice(at + 2)],
  };
}

/** The Containerfile's ENTRYPOINT (exec form) and USER. */
export function containerfileSettings(path = CONTAINERFILE): { entrypoint: string[]; user: string } {
  const text = readFileSync(path, "utf8");
  const entrypoint = /^ENTRYPOINT (\[.*\])$/m.exec(text);
  const user = /^USER (\S+)$/m.exec(text);
  if (entrypoint === null || user === null) throw new Error(`${path}: no ENTRYPOINT [...] or USER line`);
  return { entrypoint: JSON.parse(entrypoint[1]!) as string[], user: user[1]! };
}
