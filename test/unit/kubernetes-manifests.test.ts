// deploy/kubernetes/skiff.yaml without a cluster: it parses as YAML, its parts name each other
// (volumes, claim, ConfigMap, ports, labels), it fits the image (deploy/image/Containerfile: user,
// port, store path), `skiff serve` accepts the image's flags with the Deployment's args and the
// ConfigMap's config, and docs/deploy.md shows it as it is.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, test } from "vitest";
import { parseServeOptions } from "../../src/cli/serve-options.ts";
import { MANIFEST, REPO, containerfileSettings, loadSkiffManifest } from "../e2e/harness/manifests.ts";

const m = loadSkiffManifest();
const image = containerfileSettings();
const dir = mkdtempSync(join(tmpdir(), "skiff-manifests-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A flag's value in an argument list (the last one given wins, as in `skiff serve`). */
function flag(args: string[], name: string): string | undefined {
  const at = args.lastIndexOf(name);
  return at < 0 ? undefined : args[at + 1];
}

/** What `skiff serve` makes of the image's entrypoint followed by the Deployment's args. */
function serveOptions() {
  const config = join(dir, m.configKey);
  writeFileSync(config, m.configMap.data[m.configKey]);
  const serveArgs = image.entrypoint.slice(image.entrypoint.indexOf("serve") + 1);
  const options = parseServeOptions([...serveArgs, ...m.argsWithoutConfig, "--config", config], {});
  if (options === null) throw new Error("the args ask for help");
  return options;
}

describe("the Kubernetes manifest", () => {
  test("holds a ConfigMap, a PersistentVolumeClaim, a Deployment and a Service", () => {
    expect(m.objects.map((o) => `${o.apiVersion} ${o.kind}`).sort()).toEqual(["apps/v1 Deployment", "v1 ConfigMap", "v1 PersistentVolumeClaim", "v1 Service"]);
    for (const o of m.objects) expect(o.metadata.name, o.kind).toMatch(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/);
  });

  test("one replica, replaced by stopping the old one first (the store volume is ReadWriteOnce)", () => {
    expect(m.deployment.spec.replicas).toBe(1);
    expect(m.deployment.spec.strategy?.type).toBe("Recreate");
    expect(m.byKind("PersistentVolumeClaim").spec.accessModes).toEqual(["ReadWriteOnce"]);
  });

  test("the selectors of the Deployment and the Service match the pods' labels", () => {
    const labels = m.deployment.spec.template.metadata.labels;
    for (const selector of [m.deployment.spec.selector.matchLabels, m.byKind("Service").spec.selector]) {
      expect(Object.keys(selector).length).toBeGreaterThan(0);
      for (const [k, v] of Object.entries(selector)) expect(labels[k], k).toBe(v);
    }
  });

  test("the Service's port 80 reaches the container port the image listens on", () => {
    const [port, ...more] = m.byKind("Service").spec.ports;
    expect(more).toEqual([]);
    expect(port.port).toBe(80);
    const containerPort = m.container.ports.find((p: { name: string }) => p.name === port.targetPort);
    expect(containerPort?.containerPort).toBe(Number(flag(image.entrypoint, "--port")));
    expect(serveOptions().port).toBe(containerPort.containerPort);
  });

  test("the probes ask /healthz and /readyz on the service port", () => {
    expect(m.container.livenessProbe.httpGet).toEqual({ path: "/healthz", port: "http" });
    expect(m.container.readinessProbe.httpGet).toEqual({ path: "/readyz", port: "http" });
  });

  test("every mount names a volume; the store is the claim, mounted where the image keeps it", () => {
    const volumes = new Set(m.pod.volumes.map((v: { name: string }) => v.name));
    for (const mount of m.container.volumeMounts) expect(volumes.has(mount.name), mount.name).toBe(true);
    expect(m.storeMountPath).toBe(flag(image.entrypoint, "--data"));
    expect(serveOptions().dataDir).toBe(m.storeMountPath);
  });

  test("--config names a key of the ConfigMap inside its mount", () => {
    expect(m.configPath.startsWith(`${m.configMountPath}/`)).toBe(true);
    expect(Object.keys(m.configMap.data)).toContain(m.configKey);
  });

  test("skiff serve accepts the image's flags, the Deployment's args and the ConfigMap's config", () => {
    const options = serveOptions();
    expect(options.host).toBe("0.0.0.0");
    expect(options.config.upstreams.map((u) => u.prefix).sort()).toEqual(["docker.io", "ghcr.io", "quay.io", "registry.k8s.io"]);
    expect(options.config.access.mode).toBe("open");
  });

  test("the store's bound leaves room on the claimed volume", () => {
    const storage = /^(\d+)Gi$/.exec(m.byKind("PersistentVolumeClaim").spec.resources.requests.storage);
    expect(storage).not.toBeNull();
    const maxBytes = serveOptions().maxStoreBytes;
    expect(maxBytes).toBeGreaterThan(0);
    expect(maxBytes!).toBeLessThan(Number(storage![1]) * 2 ** 30 * 0.95);
  });

  test("the pod runs as the image's non-root user, with a read-only root and no privileges", () => {
    const [uid, gid] = image.user.split(":").map(Number);
    expect(uid).toBeGreaterThan(0);
    expect(m.pod.securityContext).toMatchObject({ runAsNonRoot: true, runAsUser: uid, runAsGroup: gid, fsGroup: gid });
    expect(m.container.securityContext).toMatchObject({ allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ["ALL"] } });
  });

  test("the grace period outlasts the preStop pause and skiff's shutdown timeout together", () => {
    const [sleep, seconds, ...more] = m.container.lifecycle.preStop.exec.command;
    expect([sleep, more]).toEqual(["/bin/sleep", []]);
    const timeout = serveOptions().shutdownTimeoutSeconds;
    expect(timeout).toBeGreaterThan(0);
    expect(m.pod.terminationGracePeriodSeconds).toBeGreaterThan(Number(seconds) + timeout);
  });

  test("/metrics stays on the pod's loopback", () => {
    expect(serveOptions().metrics?.host).toBe("127.0.0.1");
    expect(m.container.ports).toHaveLength(1);
  });

  test("docs/deploy.md shows the manifest as it is", () => {
    const docs = readFileSync(join(REPO, "docs/deploy.md"), "utf8");
    const manifest = readFileSync(MANIFEST, "utf8");
    expect(docs).toContain(`\`\`\`yaml\n${manifest}\`\`\``);
  });
});
