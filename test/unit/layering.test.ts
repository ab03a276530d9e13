// The layering rules of .dependency-cruiser.cjs (the same check as `npm run lint:layers`): the real
// tree must pass, and a scratch tree with deliberate breaks must fail, naming the rules it breaks.
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const config = join(root, ".dependency-cruiser.cjs");
const depcruise = join(root, "node_modules", "dependency-cruiser", "bin", "dependency-cruise.mjs");

interface Violation {
  rule: { name: string };
  from: string;
  to: string;
  cycle?: { name: string }[];
}

/** Runs the check in `cwd` over `dirs`; each violation as "rule-name: from -> to". */
function violations(cwd: string, dirs: string[]): string[] {
  if (!existsSync(depcruise)) throw new Error("dependency-cruiser is not installed: run npm install");
  const run = spawnSync(process.execPath, [depcruise, ...dirs, "--config", config, "--output-type", "json"], {
    cwd,
    encoding: "utf8",
    maxBuffer: 64 << 20,
  });
  if (!run.stdout) throw new Error(`dependency-cruiser printed no result (exit ${run.status}): ${run.stderr}`);
  const result = JSON.parse(run.stdout) as { summary: { violations: Violation[] } };
  return result.summary.violations
    .map((v) => `${v.rule.name}: ${v.from} -> ${v.to}${v.cycle ? ` (cycle: ${[v.from, ...v.cycle.map((c) => c.name)].join(" -> ")})` : ""}`)
    .sort();
}

const scratch = mkdtempSync(join(tmpdir(), "skiff-layering-"));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

function write(file: string, text: string): void {
  mkdirSync(dirname(join(scratch, file)), { recursive: true });
  writeFileSync(join(scratch, file), text);
}

describe("layering (.dependency-cruiser.cjs)", () => {
  it("src and node-agent/src import only their own and lower layers", () => {
    const found = violations(root, ["src", "node-agent/src"]);
    expect(found, `layering violations (see the rules in .dependency-cruiser.cjs):\n${found.join("\n")}\n`).toEqual([]);
  });

  it("reports an upward import and an import cycle by rule name, and passes imports that point down", () => {
    write("src/oci/reference.ts", `export const name = "alpine";\n`);
    write("src/http/errors.ts", `import { name } from "../oci/reference.ts";\nexport const notFound = name + " not found";\n`);
    write("src/oci/upstream.ts", `import { notFound } from "../http/errors.ts";\nexport const message = notFound;\n`);
    write("src/util/a.ts", `import { b } from "./b.ts";\nexport const a = () => b();\n`);
    write("src/util/b.ts", `import { a } from "./a.ts";\nexport const b = () => a;\n`);
    write("node-agent/src/reader.ts", `import type { message } from "../../src/oci/upstream.ts";\nexport type M = typeof message;\n`);

    expect(violations(scratch, ["src", "node-agent/src"])).toEqual([
      "no-circular: src/util/a.ts -> src/util/b.ts (cycle: src/util/a.ts -> src/util/b.ts -> src/util/a.ts)",
      "node-agent-imports-only-format-hash-util-client: node-agent/src/reader.ts -> src/oci/upstream.ts",
      "oci-imports-only-lower-layers: src/oci/upstream.ts -> src/http/errors.ts",
    ]);
  });
});
