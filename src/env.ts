/**
 * The Worker's environment (bindings from wrangler.toml, typed by `wrangler types` into
 * worker-configuration.d.ts, plus secrets) and the Hono context types.
 */
import type { RequestIdVariables } from "hono/request-id";
import type { Config } from "./config";

export interface Env extends Cloudflare.Env {
  /** Bearer token for POST /v1/tensors until API keys land (secret; unset = the route refuses everyone). */
  TENSORS_TOKEN?: string;
  /** Test-only: origin of the loopback server the integration tests start. */
  LOOPBACK_ORIGIN?: string;
}

export interface AppVariables extends RequestIdVariables {
  config: Config;
}

export type AppEnv = { Bindings: Env; Variables: AppVariables };
