// The certificate and key `skiff serve --tls-cert --tls-key` serves, read from their PEM files and
// checked against each other before any server uses them: a mistake is one clear line at start, and
// a bad pair met on reload is refused before it replaces a good one. node:crypto, so that Node and
// Deno check alike.
import { createPrivateKey, X509Certificate } from "node:crypto";
import { readFile } from "node:fs/promises";

/** Where the PEM files are. */
export interface TlsFiles {
  cert: string;
  key: string;
}

/** A checked pair, as the servers take it. */
export interface TlsPair {
  /** The certificate chain, leaf first. */
  cert: string;
  key: string;
  /** SHA-256 fingerprint of the leaf certificate (AA:BB:…), to tell pairs apart in the log. */
  fingerprint: string;
  /** Subject, expiry and fingerprint, for the log. */
  summary: string;
}

export async function readTlsPair(files: TlsFiles): Promise<TlsPair> {
  const [cert, key] = await Promise.all([readPem(files.cert, "certificate"), readPem(files.key, "key")]);
  let leaf: X509Certificate;
  try {
    leaf = new X509Certificate(cert);
  } catch {
    throw new Error(`TLS certificate ${files.cert} holds no PEM certificate`);
  }
  let matches: boolean;
  try {
    matches = leaf.checkPrivateKey(createPrivateKey(key));
  } catch {
    throw new Error(`TLS key ${files.key} holds no PEM private key (an encrypted key is not supported)`);
  }
  if (!matches) throw new Error(`TLS key ${files.key} does not match the certificate in ${files.cert}`);
  const subject = leaf.subject.replace(/\n/g, ", ");
  return { cert, key, fingerprint: leaf.fingerprint256, summary: `${subject}, valid until ${leaf.validTo}, sha256 ${leaf.fingerprint256}` };
}

async function readPem(path: string, what: string): Promise<string> {
  try {
    return await readFile(path, "utf8");
  } catch (err) {
    throw new Error(`can't read the TLS ${what} ${path}: ${(err as { code?: string }).code ?? (err as Error).message}`);
  }
}
