import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts", "node-agent/test/**/*.test.ts"],
    // End-to-end suites start real registries and containerd; on a 2-core machine they run one file at a time.
    fileParallelism: false,
    testTimeout: 30_000,
    hookTimeout: 120_000,
  },
});
