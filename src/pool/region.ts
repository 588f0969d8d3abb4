/**
 * The caller's region, from `request.cf`, as the codes a node may declare, most specific first: the
 * Cloudflare colo (`FRA`), the country (`DE`), the continent (`EU`). A node declaring any of them is "in
 * the caller's region"; a closer match ranks higher.
 */

/** The parts of `request.cf` the router uses. */
export interface CallerLocation {
  colo?: unknown;
  country?: unknown;
  continent?: unknown;
}

/** Region keys, upper-case, most specific first; empty without `request.cf` (local requests, tests). */
export function callerRegion(cf: CallerLocation | null | undefined): string[] {
  if (!cf) return [];
  const keys: string[] = [];
  for (const value of [cf.colo, cf.country, cf.continent]) {
    if (typeof value !== "string" || value === "") continue;
    const key = value.toUpperCase();
    // Cloudflare's "T1" country (Tor) and "XX" (unknown) say nothing about where the caller is.
    if (key === "T1" || key === "XX") continue;
    if (!keys.includes(key)) keys.push(key);
  }
  return keys;
}

/** 0 for the most specific match, growing as matches widen; `keys.length` when the node is elsewhere. */
export function regionRank(nodeRegion: string | undefined, keys: readonly string[]): number {
  if (!nodeRegion) return keys.length;
  const rank = keys.indexOf(nodeRegion.toUpperCase());
  return rank === -1 ? keys.length : rank;
}
