// skopeo, isolated from the machine's container configuration: its own policy (accept anything),
// an empty registries.conf, and an auth file in the run directory, so nothing but the command line
// decides where it connects and with which credentials.
import { existsSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { namedDir } from "./workdir.ts";
import { childEnv, run, runOk, type RunResult } from "./processes.ts";

function skopeoConfig(): { policy: string; env: NodeJS.ProcessEnv } {
  const dir = namedDir("skopeo-config");
  const policy = join(dir, "policy.json");
  const registries = join(dir, "registries.conf");
  if (!existsSync(policy)) {
    writeFileSync(policy, JSON.stringify({ default: [{ type: "insecureAcceptAnything" }] }));
    writeFileSync(registries, "# empty: no mirrors, no short names\n");
  }
  return {
    policy,
    env: childEnv({
      CONTAINERS_REGISTRIES_CONF: registries,
      REGISTRY_AUTH_FILE: join(dir, "auth.json"),
      DOCKER_CONFIG: join(dir, "docker"),
    }),
  };
}

export interface SkopeoCopyOptions {
  srcCreds?: string;
  destCreds?: string;
  /** Copy every image of an index (`--all`). */
  all?: boolean;
  /** Fail rather than change any digest (`--preserve-digests`). */
  preserveDigests?: boolean;
  timeoutMs?: number;
  /** Verify the source's TLS certificate against the CA certificates (`*.crt`) in this directory. */
  srcCertDir?: string;
}

function copyArgs(src: string, dest: string, o: SkopeoCopyOptions, policy: string): string[] {
  const srcTls = o.srcCertDir !== undefined ? ["--src-tls-verify=true", "--src-cert-dir", o.srcCertDir] : ["--src-tls-verify=false"];
  const args = ["--policy", policy, "copy", ...srcTls, "--dest-tls-verify=false"];
  args.push(o.srcCreds !== undefined ? `--src-creds=${o.srcCreds}` : "--src-no-creds");
  if (o.destCreds !== undefined) args.push(`--dest-creds=${o.destCreds}`);
  if (o.all === true) args.push("--all");
  if (o.preserveDigests === true) args.push("--preserve-digests");
  args.push(src, dest);
  return args;
}

/** `skopeo copy SRC DEST`; returns the result whatever the exit status. */
export function skopeoCopyResult(src: string, dest: string, o: SkopeoCopyOptions = {}): Promise<RunResult> {
  const { policy, env } = skopeoConfig();
  return run("skopeo", copyArgs(src, dest, o, policy), { env, timeoutMs: o.timeoutMs ?? 300_000 });
}

/** `skopeo copy SRC DEST`; throws unless it succeeds. */
export function skopeoCopy(src: string, dest: string, o: SkopeoCopyOptions = {}): Promise<RunResult> {
  const { policy, env } = skopeoConfig();
  return runOk("skopeo", copyArgs(src, dest, o, policy), { env, timeoutMs: o.timeoutMs ?? 300_000 });
}

/** `skopeo inspect --raw docker://REF`: the manifest bytes exactly as served. */
export async function skopeoInspectRaw(ref: string, creds?: string): Promise<Buffer> {
  const { policy, env } = skopeoConfig();
  const args = ["--policy", policy, "inspect", "--raw", "--tls-verify=false"];
  args.push(creds !== undefined ? `--creds=${creds}` : "--no-creds");
  args.push(`docker://${ref}`);
  const r = await runOk("skopeo", args, { env, timeoutMs: 60_000 });
  // run() decodes as UTF-8; manifests are JSON text, so this round-trips exactly.
  return Buffer.from(r.stdout, "utf8");
}

/** `skopeo inspect --config REF` (REF with its transport, e.g. `oci-archive:PATH`): the image's config. */
export async function skopeoImageConfig(ref: string): Promise<Record<string, unknown>> {
  const { policy, env } = skopeoConfig();
  const r = await runOk("skopeo", ["--policy", policy, "inspect", "--config", ref], { env, timeoutMs: 60_000 });
  return JSON.parse(r.stdout) as Record<string, unknown>;
}
