/**
 * The Worker's environment (bindings from wrangler.toml, typed by `wrangler types` into
 * worker-configuration.d.ts, plus secrets) and the Hono context types.
 */
import type { RequestIdVariables } from "hono/request-id";
import type { Config } from "./config";

declare global {
  namespace Cloudflare {
    /** Secrets and test bindings, which wrangler.toml does not declare. */
    interface Env {
      /** The bearer key clients send, until the API-key system lands (unset: client routes refuse everyone). */
      EDGE_API_KEY?: string;
      /** Bearer secret GPU nodes send on /v1/pool/* (heartbeats) and the edge sends to nodes (unset: the pool refuses everyone). */
      NODE_SECRET?: string;
      /** Test-only: origin of the loopback server the integration tests start. */
      LOOPBACK_ORIGIN?: string;
    }
  }
}

export type Env = Cloudflare.Env;

export interface AppVariables extends RequestIdVariables {
  config: Config;
}

export type AppEnv = { Bindings: Env; Variables: AppVariables };
