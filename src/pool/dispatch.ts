/**
 * The retry and hedging policy, apart from any network code so it can be tested with fake attempts.
 *
 * An attempt is "start the request on one node and resolve when its first token (event) arrives". Before
 * that, nothing has reached the client, so a failure is retried on another node; after it, the caller
 * owns the stream and this module is done. With `hedgeAfterMs`, a first token that is late starts a
 * second attempt on another node; whichever answers first wins and the other is aborted.
 *
 * Rules:
 * - at most `maxAttempts` attempts in all (hedges included), never two on the same node;
 * - at most two at once (one, without hedging); each sole running attempt gets its own hedge timer;
 * - a retryable failure (by default: an error with `retryable === true`, as `NodeCallError` has) starts
 *   the next attempt at once when nothing else is running; a non-retryable one aborts the others and is
 *   rethrown as is;
 * - when no node is left to try (or the attempts are spent) it rejects with `ApiError("no_capacity")`
 *   carrying `retryAfter` and, as `cause`, the last node error;
 * - aborting `signal` aborts every running attempt and rejects with the signal's reason; the winner's
 *   signal stays tied to `signal`, so a client that leaves later still cancels the node request.
 */
import { ApiError } from "../errors";

export type PickOutcome<N> = { ok: true; node: N } | { ok: false; retryAfter: number; message?: string };

export type AttemptOutcome = "won" | "failed" | "lost" | "aborted";

export interface AttemptRecord<N> {
  node: N;
  hedge: boolean;
  outcome: AttemptOutcome | "running";
  error?: unknown;
}

export interface DispatchOptions<N extends { id: string }, T> {
  /** The next node to try, never one of `tried` (ids). */
  pick: (tried: ReadonlySet<string>) => PickOutcome<N> | Promise<PickOutcome<N>>;
  /** Starts the request on `node`; resolves at its first token. Must stop when `signal` aborts. */
  attempt: (node: N, signal: AbortSignal) => Promise<T>;
  maxAttempts: number;
  /** Start a second attempt when the first token has not come this many ms after an attempt started. */
  hedgeAfterMs?: number;
  signal?: AbortSignal;
  /** Default: `error.retryable === true`. */
  isRetryable?: (error: unknown) => boolean;
  /** A value that arrived after another attempt had won (release its stream, say). */
  discard?: (value: T, node: N) => void;
  onAttemptStart?: (node: N, info: { hedge: boolean }) => void;
  onAttemptEnd?: (node: N, outcome: AttemptOutcome, error?: unknown) => void;
}

export interface DispatchResult<N, T> {
  value: T;
  node: N;
  /** Every attempt, in the order they started. */
  attempts: AttemptRecord<N>[];
  /** True when a hedge was started. */
  hedged: boolean;
}

export const defaultIsRetryable = (error: unknown): boolean =>
  typeof error === "object" && error !== null && (error as { retryable?: unknown }).retryable === true;

export function dispatchWithRetry<N extends { id: string }, T>(options: DispatchOptions<N, T>): Promise<DispatchResult<N, T>> {
  const { pick, attempt, maxAttempts, hedgeAfterMs, signal } = options;
  if (!Number.isInteger(maxAttempts) || maxAttempts < 1) throw new TypeError("dispatchWithRetry: maxAttempts must be an integer ≥ 1");
  if (hedgeAfterMs !== undefined && !(hedgeAfterMs >= 0)) throw new TypeError("dispatchWithRetry: hedgeAfterMs must be ≥ 0");
  const isRetryable = options.isRetryable ?? defaultIsRetryable;

  return new Promise<DispatchResult<N, T>>((resolve, reject) => {
    const tried = new Set<string>();
    const attempts: AttemptRecord<N>[] = [];
    const running = new Map<AttemptRecord<N>, AbortController>();
    let picking = 0;
    let settled = false;
    let hedged = false;
    let hedgeTimer: ReturnType<typeof setTimeout> | undefined;
    let lastError: unknown;
    let lastRetryAfter: number | undefined;
    let lastPickMessage: string | undefined;

    const onParentAbort = () => fail(signal!.reason, "aborted");
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    signal?.addEventListener("abort", onParentAbort, { once: true });

    function clearHedge() {
      if (hedgeTimer !== undefined) clearTimeout(hedgeTimer);
      hedgeTimer = undefined;
    }

    function armHedge() {
      clearHedge();
      if (hedgeAfterMs === undefined || settled || running.size !== 1 || picking > 0 || attempts.length >= maxAttempts) return;
      hedgeTimer = setTimeout(() => {
        hedgeTimer = undefined;
        if (!settled && running.size === 1 && picking === 0) void launch(true);
      }, hedgeAfterMs);
    }

    /** Ends the dispatch with an error: every running attempt is aborted. */
    function fail(error: unknown, outcome: AttemptOutcome) {
      if (settled) return;
      settled = true;
      clearHedge();
      signal?.removeEventListener("abort", onParentAbort);
      for (const [record, controller] of running) end(record, controller, outcome, error);
      reject(error);
    }

    function end(record: AttemptRecord<N>, controller: AbortController, outcome: AttemptOutcome, error?: unknown) {
      running.delete(record);
      record.outcome = outcome;
      // Whatever a failed or losing attempt left open is released through its signal.
      if (outcome !== "won") controller.abort(error ?? new DOMException("another node answered first", "AbortError"));
      if (outcome === "failed") record.error = error;
      options.onAttemptEnd?.(record.node, outcome, outcome === "failed" ? error : undefined);
    }

    /** Nothing running and nothing more to try: give up. */
    function exhaustedIfIdle() {
      if (settled || running.size > 0 || picking > 0) return;
      const tries = attempts.length;
      const message =
        tries === 0
          ? (lastPickMessage ?? "No GPU node can take the request now; retry later.")
          : `No GPU node could take the request (${tries} tried); retry later.`;
      fail(new ApiError("no_capacity", message, { retryAfter: lastRetryAfter ?? 1, cause: lastError }), "aborted");
    }

    async function launch(hedge: boolean): Promise<void> {
      if (settled || attempts.length >= maxAttempts) return exhaustedIfIdle();
      picking++;
      let picked: PickOutcome<N>;
      try {
        picked = await pick(tried);
      } catch (error) {
        picking--;
        fail(error, "aborted");
        return;
      }
      picking--;
      if (settled) return;
      if (!picked.ok || tried.has(picked.node.id)) {
        if (!picked.ok) {
          lastRetryAfter = picked.retryAfter;
          lastPickMessage = picked.message;
        }
        // A hedge that finds no second node just lets the first one run on.
        armHedgeOrExhaust();
        return;
      }
      const node = picked.node;
      tried.add(node.id);
      const record: AttemptRecord<N> = { node, hedge, outcome: "running" };
      const controller = new AbortController();
      attempts.push(record);
      running.set(record, controller);
      if (hedge) hedged = true;
      options.onAttemptStart?.(node, { hedge });
      armHedge();
      let promise: Promise<T>;
      try {
        promise = Promise.resolve(attempt(node, controller.signal));
      } catch (error) {
        promise = Promise.reject(error);
      }
      promise.then(
        (value) => {
          if (settled || !running.has(record)) {
            options.discard?.(value, node);
            return;
          }
          settled = true;
          clearHedge();
          end(record, controller, "won");
          for (const [other, otherController] of running) end(other, otherController, "lost");
          // The winner's node request still ends when the caller goes away.
          if (signal) {
            signal.removeEventListener("abort", onParentAbort);
            signal.addEventListener("abort", () => controller.abort(signal.reason), { once: true });
          }
          resolve({ value, node, attempts, hedged });
        },
        (error) => {
          if (settled || !running.has(record)) return;
          lastError = error;
          if (!isRetryable(error)) {
            end(record, controller, "failed", error);
            fail(error, "aborted");
            return;
          }
          end(record, controller, "failed", error);
          if (running.size === 0 && picking === 0) void launch(false);
          else armHedge();
        },
      );
    }

    function armHedgeOrExhaust() {
      if (running.size === 0 && picking === 0) exhaustedIfIdle();
      else armHedge();
    }

    void launch(false);
  });
}
