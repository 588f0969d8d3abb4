/** Reading Prometheus text from a node's /metrics in tests and benchmarks (no Node APIs: runs in workerd too). */

/** A metric's value: the sum over its series whose labels include every given label. */
export function metricValue(text: string, name: string, labels: Record<string, string> = {}): number {
  let sum = 0;
  for (const line of text.split("\n")) {
    const m = /^([a-z_]+)(\{[^}]*\})?\s+([0-9.eE+-]+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    if (Object.entries(labels).every(([k, v]) => (m[2] ?? "").includes(`${k}="${v}"`))) sum += Number(m[3]);
  }
  return sum;
}

/** Generate requests a simulated node has answered so far (every outcome). */
export async function nodeRequests(nodeUrl: string): Promise<number> {
  return metricValue(await (await fetch(`${nodeUrl}/metrics`)).text(), "qvl_node_requests_total");
}
