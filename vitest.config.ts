import { cloudflareTest } from "@cloudflare/vitest-pool-workers";
import { defineConfig } from "vitest/config";

// Two projects: tests inside workerd (the edge, its bindings, the image pipeline as deployed) and
// plain Node tests (CLI, loopback servers, later the GPU node). `test/support/loopback-server.ts`
// runs in Node before the workerd tests and hands them its loopback port.
export default defineConfig({
  test: {
    projects: [
      {
        plugins: [
          cloudflareTest(({ inject }) => ({
            main: "./src/index.ts",
            wrangler: { configPath: "./wrangler.toml" },
            miniflare: {
              bindings: {
                EDGE_API_KEY: "test-tensors-token",
                NODE_SECRET: "test-node-secret",
                ALLOW_HTTP_LOOPBACK: "true",
                LOOPBACK_ORIGIN: inject("loopbackOrigin"),
                SIM_NODE_URL: inject("simNodeUrl"),
                COUNTED_NODE_URL: inject("countedNodeUrl"),
                SLOW_NODE_URL: inject("slowNodeUrl"),
                FAILING_NODE_URL: inject("failingNodeUrl"),
                CACHE_ORIGIN: inject("cacheOrigin"),
              },
            },
          })),
        ],
        test: {
          name: "workers",
          include: ["src/**/*.test.ts", "test/workers/**/*.test.ts"],
          // The loopback fixture server; a simulated GPU node and a caching image origin (keys, limits, caches).
          globalSetup: ["./test/support/loopback-server.ts", "./test/node/support/workers-services.ts"],
          testTimeout: 60_000,
        },
      },
      {
        test: {
          name: "node",
          environment: "node",
          include: ["test/node/**/*.test.ts", "gpu-node/**/*.test.ts", "scripts/**/*.test.ts"],
          testTimeout: 60_000,
        },
      },
    ],
  },
});
