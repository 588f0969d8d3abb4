/**
 * Prometheus metrics for one agent, in a registry of its own (never prom-client's global one, so two
 * agents in one process — tests — do not share counters).
 *
 *   qvl_node_requests_total{outcome}            generate requests by outcome: ok, cancelled,
 *                                               deadline_exceeded, engine_failed, overloaded, draining,
 *                                               engine_unavailable, invalid_frame, unauthorized, internal_error
 *   qvl_node_errors_total{code}                 errors by their most specific code (frame codes included)
 *   qvl_node_queue_depth / qvl_node_active_requests / qvl_node_capacity / qvl_node_draining / qvl_node_engine_healthy
 *   qvl_node_queue_wait_seconds                 histogram: admission to start
 *   qvl_node_time_to_first_token_seconds        histogram: request received to first token
 *   qvl_node_request_duration_seconds           histogram: request received to end of stream
 *   qvl_node_generated_tokens_total             counter (rate() of it is the node's tokens/s)
 *   qvl_node_stream_writes_total                counter: chunks written to generate streams (each costs the edge
 *                                               a wake-up; generated tokens / writes is what output pacing merges)
 *   qvl_node_decode_tokens_per_second           histogram: per request, tokens after the first / time since it
 */
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";

export interface MetricsSources {
  active: () => number;
  queued: () => number;
  capacity: () => number;
  draining: () => boolean;
  healthy: () => boolean;
}

export type AgentMetrics = ReturnType<typeof createAgentMetrics>;

export function createAgentMetrics(sources: MetricsSources, options: { defaultMetrics?: boolean } = {}) {
  const registry = new Registry();
  const registers = [registry];
  if (options.defaultMetrics) collectDefaultMetrics({ register: registry, prefix: "qvl_node_" });
  const gauge = (name: string, help: string, read: () => number) =>
    new Gauge({
      name,
      help,
      registers,
      collect() {
        this.set(read());
      },
    });
  gauge("qvl_node_queue_depth", "Requests waiting for a slot.", sources.queued);
  gauge("qvl_node_active_requests", "Requests running in the engine.", sources.active);
  gauge("qvl_node_capacity", "Requests the engine runs at once.", sources.capacity);
  gauge("qvl_node_draining", "1 while the node drains.", () => (sources.draining() ? 1 : 0));
  gauge("qvl_node_engine_healthy", "1 when the engine reports healthy.", () => (sources.healthy() ? 1 : 0));
  return {
    registry,
    requests: new Counter({
      name: "qvl_node_requests_total",
      help: "Generate requests by outcome.",
      labelNames: ["outcome"] as const,
      registers,
    }),
    errors: new Counter({ name: "qvl_node_errors_total", help: "Errors by code.", labelNames: ["code"] as const, registers }),
    queueWait: new Histogram({
      name: "qvl_node_queue_wait_seconds",
      help: "Time from admission to start.",
      buckets: [0.001, 0.005, 0.025, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    }),
    ttft: new Histogram({
      name: "qvl_node_time_to_first_token_seconds",
      help: "Time from receiving the request to its first token.",
      buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    }),
    duration: new Histogram({
      name: "qvl_node_request_duration_seconds",
      help: "Time from receiving the request to the end of its stream.",
      buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120],
      registers,
    }),
    tokens: new Counter({ name: "qvl_node_generated_tokens_total", help: "Tokens generated (all prompts).", registers }),
    streamWrites: new Counter({
      name: "qvl_node_stream_writes_total",
      help: "Chunks written to generate streams (events that go out together are one chunk).",
      registers,
    }),
    decodeRate: new Histogram({
      name: "qvl_node_decode_tokens_per_second",
      help: "Per request: tokens after the first divided by the time since the first.",
      buckets: [5, 10, 20, 40, 60, 80, 120, 200, 400, 1000, 5000],
      registers,
    }),
  };
}
