/**
 * The Worker's environment (bindings from wrangler.toml, typed by `wrangler types` into
 * worker-configuration.d.ts, plus secrets) and the Hono context types.
 */
import type { RequestIdVariables } from "hono/request-id";
import type { Config } from "./config";
import type { Principal, UsageOutcome } from "./middleware/api-key";

declare global {
  namespace Cloudflare {
    /** Secrets and test bindings, which wrangler.toml does not declare. */
    interface Env {
      /**
       * The root key: an operator credential accepted on every route with every scope, never rate limited.
       * It exists to create the first API keys (`npm run keys`, `npm start`); clients get `qvl_…` keys.
       * Unset: only `qvl_…` keys work.
       */
      EDGE_API_KEY?: string;
      /** Bearer secret GPU nodes send on /v1/pool/* (heartbeats) and the edge sends to nodes (unset: the pool refuses everyone). */
      NODE_SECRET?: string;
      /** Test-only: origin of the loopback server the integration tests start. */
      LOOPBACK_ORIGIN?: string;
      /** Test-only: a simulated GPU node (`gpu-node serve --engine simulated`) the workerd tests may route to. */
      SIM_NODE_URL?: string;
      /** Test-only: another simulated node, whose request count one test file reads. */
      COUNTED_NODE_URL?: string;
      /** Test-only: a simulated node with a long prefill (≈ 600 ms before the first token). */
      SLOW_NODE_URL?: string;
      /** Test-only: a simulated node that takes every request, then fails it before the first token. */
      FAILING_NODE_URL?: string;
      /** Test-only: a loopback origin that serves images with cache headers and counts its requests. */
      CACHE_ORIGIN?: string;
    }
  }
}

export type Env = Cloudflare.Env;

export interface AppVariables extends RequestIdVariables {
  config: Config;
  /** Who is calling (set by the api-key middleware). */
  principal?: Principal;
  /**
   * Resolves once the key's rate limiter has admitted this request; throws its refusal otherwise (set on
   * generation routes, whose decision overlaps the route's first steps). Await it before costly work.
   */
  admitted?: () => Promise<void>;
  /** What a generation request used, settled when its answer ends (read by the rate-limit middleware). */
  usage?: Promise<UsageOutcome>;
  /** `Server-Timing` entries added by middleware (auth, rate limit). */
  timings?: string[];
}

export type AppEnv = { Bindings: Env; Variables: AppVariables };
