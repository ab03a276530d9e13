// A private CA and a server certificate for 127.0.0.1 made with openssl, for upstreams served over
// https that no system trust store knows.
import { join } from "node:path";
import type { TlsFiles } from "./registry.ts";
import { runOk } from "./processes.ts";
import { tempDir } from "./workdir.ts";

export async function makeTls(name = "tls"): Promise<TlsFiles> {
  const dir = tempDir(name);
  const ca = join(dir, "ca.pem");
  const caKey = join(dir, "ca.key");
  const key = join(dir, "server.key");
  const csr = join(dir, "server.csr");
  const certificate = join(dir, "server.pem");
  const ext = join(dir, "server.ext");
  await runOk("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj", "/CN=skiff test CA", "-keyout", caKey, "-out", ca]);
  await runOk("openssl", ["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", key, "-out", csr]);
  await runOk("sh", ["-c", `printf 'subjectAltName=IP:127.0.0.1\\nextendedKeyUsage=serverAuth\\n' > '${ext}'`]);
  await runOk("openssl", ["x509", "-req", "-in", csr, "-CA", ca, "-CAkey", caKey, "-CAcreateserial", "-days", "2", "-extfile", ext, "-out", certificate]);
  return { certificate, key, ca };
}
