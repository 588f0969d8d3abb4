/**
 * dispatchWithRetry with fake attempts and fake timers: retry before the first token, hedging, aborts,
 * and the no-capacity error.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { ApiError } from "../errors";
import { dispatchWithRetry, type PickOutcome } from "./dispatch";

interface FakeNode {
  id: string;
}

interface Call {
  node: FakeNode;
  signal: AbortSignal;
  resolve: (value: string) => void;
  reject: (error: unknown) => void;
}

class NodeFailure extends Error {
  constructor(
    message: string,
    readonly retryable: boolean,
  ) {
    super(message);
  }
}

/** Nodes offered in order, never one already tried; attempts wait until the test settles them. */
function harness(ids: string[]) {
  const calls: Call[] = [];
  const picks: string[][] = [];
  const pick = (tried: ReadonlySet<string>): PickOutcome<FakeNode> => {
    picks.push([...tried]);
    const id = ids.find((i) => !tried.has(i));
    return id ? { ok: true, node: { id } } : { ok: false, retryAfter: 7, message: "nothing left" };
  };
  const attempt = (node: FakeNode, signal: AbortSignal) =>
    new Promise<string>((resolve, reject) => {
      calls.push({ node, signal, resolve, reject });
    });
  const call = (id: string) => {
    const found = calls.find((c) => c.node.id === id);
    if (!found) throw new Error(`no attempt on ${id}; attempts: ${calls.map((c) => c.node.id).join(",")}`);
    return found;
  };
  return { calls, picks, pick, attempt, call };
}

/** Lets pending promise callbacks run (fake timers: no real time passes). */
const settle = () => vi.advanceTimersByTimeAsync(0);

beforeEach(() => {
  vi.useFakeTimers();
});
afterEach(() => {
  vi.useRealTimers();
});

describe("without hedging", () => {
  it("resolves with the first node's first token", async () => {
    const h = harness(["a", "b"]);
    const done = dispatchWithRetry({ pick: h.pick, attempt: h.attempt, maxAttempts: 3 });
    await settle();
    h.call("a").resolve("tok");
    const result = await done;
    expect(result.value).toBe("tok");
    expect(result.node.id).toBe("a");
    expect(result.hedged).toBe(false);
    expect(result.attempts.map((a) => [a.node.id, a.outcome])).toEqual([["a", "won"]]);
    expect(h.call("a").signal.aborted).toBe(false);
  });

  it("retries on another node when a node fails before the first token", async () => {
    const h = harness(["a", "b", "c"]);
    const done = dispatchWithRetry({ pick: h.pick, attempt: h.attempt, maxAttempts: 3 });
    await settle();
    h.call("a").reject(new NodeFailure("connection refused", true));
    await settle();
    h.call("b").resolve("tok");
    const result = await done;
    expect(result.node.id).toBe("b");
    expect(h.picks).toEqual([[], ["a"]]);
    expect(result.attempts.map((a) => [a.node.id, a.outcome])).toEqual([
      ["a", "failed"],
      ["b", "won"],
    ]);
    expect((result.attempts[0].error as Error).message).toBe("connection refused");
  });

  it("rethrows a non-retryable failure as is and tries nowhere else", async () => {
    const h = harness(["a", "b"]);
    const done = dispatchWithRetry({ pick: h.pick, attempt: h.attempt, maxAttempts: 3 });
    const failure = new NodeFailure("invalid frame", false);
    await settle();
    h.call("a").reject(failure);
    await expect(done).rejects.toBe(failure);
    expect(h.calls).toHaveLength(1);
  });

  it("treats an error without retryable: true as final (a bug is not retried on every node)", async () => {
    const h = harness(["a", "b"]);
    const done = dispatchWithRetry({ pick: h.pick, attempt: h.attempt, maxAttempts: 3 });
    await settle();
    h.call("a").reject(new TypeError("x is undefined"));
    await expect(done).rejects.toBeInstanceOf(TypeError);
    expect(h.calls).toHaveLength(1);
  });

  it("an attempt that throws synchronously counts as a failed attempt", async () => {
    const h = harness(["a", "b"]);
    const done = dispatchWithRetry({
      pick: h.pick,
      attempt: (node, signal) => {
        if (node.id === "a") throw new NodeFailure("boom", true);
        return h.attempt(node, signal);
      },
      maxAttempts: 2,
    });
    await settle();
    h.call("b").resolve("tok");
    expect((await done).node.id).toBe("b");
  });

  it("gives up with no_capacity (503, Retry-After, the last node error as cause) once attempts are spent", async () => {
    const h = harness(["a", "b", "c"]);
    const done = dispatchWithRetry({ pick: h.pick, attempt: h.attempt, maxAttempts: 2 });
    const rejected = expect(done).rejects.toBeInstanceOf(ApiError);
    await settle();
    h.call("a").reject(new NodeFailure("a down", true));
    await settle();
    const last = new NodeFailure("b down", true);
    h.call("b").reject(last);
    await rejected;
    const error = (await done.catch((e) => e)) as ApiError;
    expect(error.code).toBe("no_capacity");
    expect(error.status).toBe(503);
    expect(error.retryAfter).toBe(1);
    expect(error.cause).toBe(last);
    expect(h.calls.map((c) => c.node.id)).toEqual(["a", "b"]);
  });

  it("gives up with the pick's Retry-After when the nodes run out", async () => {
    const h = harness(["a"]);
    const done = dispatchWithRetry({ pick: h.pick, attempt: h.attempt, maxAttempts: 5 });
    const caught = done.catch((e) => e);
    await settle();
    h.call("a").reject(new NodeFailure("a down", true));
    const error = (await caught) as ApiError;
    expect(error.code).toBe("no_capacity");
    expect(error.retryAfter).toBe(7);
  });

  it("with no node at all, rejects with the pick's message and Retry-After", async () => {
    const pick = (): PickOutcome<FakeNode> => ({ ok: false, retryAfter: 5, message: "No GPU node serving qwen-vl is available." });
    const error = (await dispatchWithRetry({ pick, attempt: async () => "x", maxAttempts: 3 }).catch((e) => e)) as ApiError;
    expect(error).toBeInstanceOf(ApiError);
    expect(error.message).toBe("No GPU node serving qwen-vl is available.");
    expect(error.retryAfter).toBe(5);
  });

  it("a pick that throws ends the dispatch with that error", async () => {
    const boom = new Error("pool unreachable");
    const done = dispatchWithRetry<FakeNode, string>({
      pick: () => Promise.reject(boom),
      attempt: async () => "x",
      maxAttempts: 3,
    });
    await expect(done).rejects.toBe(boom);
  });

  it("refuses a maxAttempts below 1 or a negative hedge delay", () => {
    const h = harness(["a"]);
    expect(() => dispatchWithRetry({ pick: h.pick, attempt: h.attempt, maxAttempts: 0 })).toThrow(TypeError);
    expect(() => dispatchWithRetry({ pick: h.pick, attempt: h.attempt, maxAttempts: 1.5 })).toThrow(TypeError);
    expect(() => dispatchWithRetry({ pick: h.pick, attempt: h.attempt, maxAttempts: 1, hedgeAfterMs: -1 })).toThrow(TypeError);
  });

  it("never starts a second attempt while one runs, however long it takes", async () => {
    const h = harness(["a", "b"]);
    const done = dispatchWithRetry({ pick: h.pick, attempt: h.attempt, maxAttempts: 3 });
    await vi.advanceTimersByTimeAsync(60_000);
    expect(h.calls).toHaveLength(1);
    h.call("a").resolve("late");
    expect((await done).value).toBe("late");
  });
});

describe("hedging", () => {
  it("starts a second attempt when the first token is late; the first answer wins and the loser is aborted", async () => {
    const h = harness(["a", "b"]);
    const ends: string[] = [];
    const done = dispatchWithRetry({
      pick: h.pick,
      attempt: h.attempt,
      maxAttempts: 3,
      hedgeAfterMs: 100,
      onAttemptEnd: (node, outcome) => ends.push(`${node.id}:${outcome}`),
    });
    await vi.advanceTimersByTimeAsync(99);
    expect(h.calls).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(h.calls.map((c) => c.node.id)).toEqual(["a", "b"]);
    h.call("b").resolve("from b");
    const result = await done;
    expect(result.node.id).toBe("b");
    expect(result.hedged).toBe(true);
    expect(h.call("a").signal.aborted).toBe(true);
    expect(h.call("b").signal.aborted).toBe(false);
    expect(result.attempts.map((a) => [a.node.id, a.hedge, a.outcome])).toEqual([
      ["a", false, "lost"],
      ["b", true, "won"],
    ]);
    expect(ends).toEqual(["b:won", "a:lost"]);
  });

  it("does not hedge when the first token comes in time", async () => {
    const h = harness(["a", "b"]);
    const done = dispatchWithRetry({ pick: h.pick, attempt: h.attempt, maxAttempts: 3, hedgeAfterMs: 100 });
    await vi.advanceTimersByTimeAsync(50);
    h.call("a").resolve("tok");
    await vi.advanceTimersByTimeAsync(1_000);
    const result = await done;
    expect(result.hedged).toBe(false);
    expect(h.calls).toHaveLength(1);
    expect(h.picks).toHaveLength(1);
  });

  it("the primary can still win after a hedge started; the hedge is aborted", async () => {
    const h = harness(["a", "b"]);
    const done = dispatchWithRetry({ pick: h.pick, attempt: h.attempt, maxAttempts: 3, hedgeAfterMs: 100 });
    await vi.advanceTimersByTimeAsync(100);
    h.call("a").resolve("from a");
    const result = await done;
    expect(result.node.id).toBe("a");
    expect(h.call("b").signal.aborted).toBe(true);
  });

  it("a value that arrives after the race is decided is handed to discard", async () => {
    const h = harness(["a", "b"]);
    const discarded: string[] = [];
    const done = dispatchWithRetry({
      pick: h.pick,
      attempt: h.attempt,
      maxAttempts: 3,
      hedgeAfterMs: 100,
      discard: (value, node) => discarded.push(`${node.id}=${value}`),
    });
    await vi.advanceTimersByTimeAsync(100);
    h.call("b").resolve("from b");
    await done;
    h.call("a").resolve("from a, too late"); // an attempt that ignored its abort
    await settle();
    expect(discarded).toEqual(["a=from a, too late"]);
  });

  it("when the primary fails during a hedge, the hedge carries on alone (no third node at once)", async () => {
    const h = harness(["a", "b", "c"]);
    const done = dispatchWithRetry({ pick: h.pick, attempt: h.attempt, maxAttempts: 3, hedgeAfterMs: 100 });
    await vi.advanceTimersByTimeAsync(100);
    h.call("a").reject(new NodeFailure("a died", true));
    await settle();
    expect(h.calls.map((c) => c.node.id)).toEqual(["a", "b"]);
    h.call("b").resolve("from b");
    expect((await done).node.id).toBe("b");
  });

  it("with no second node, the first attempt runs on and may still win", async () => {
    const h = harness(["a"]);
    const done = dispatchWithRetry({ pick: h.pick, attempt: h.attempt, maxAttempts: 3, hedgeAfterMs: 100 });
    await vi.advanceTimersByTimeAsync(500);
    expect(h.calls).toHaveLength(1);
    h.call("a").resolve("tok");
    expect((await done).hedged).toBe(false);
  });

  it("hedges count against maxAttempts", async () => {
    const h = harness(["a", "b", "c"]);
    const done = dispatchWithRetry({ pick: h.pick, attempt: h.attempt, maxAttempts: 2, hedgeAfterMs: 100 });
    const caught = done.catch((e) => e);
    await vi.advanceTimersByTimeAsync(100);
    h.call("a").reject(new NodeFailure("a died", true));
    await settle();
    h.call("b").reject(new NodeFailure("b died", true));
    const error = (await caught) as ApiError;
    expect(error.code).toBe("no_capacity");
    expect(h.calls.map((c) => c.node.id)).toEqual(["a", "b"]);
  });

  it("a non-retryable failure of one attempt aborts the other", async () => {
    const h = harness(["a", "b"]);
    const done = dispatchWithRetry({ pick: h.pick, attempt: h.attempt, maxAttempts: 3, hedgeAfterMs: 100 });
    const caught = done.catch((e) => e);
    await vi.advanceTimersByTimeAsync(100);
    const failure = new NodeFailure("refused", false);
    h.call("b").reject(failure);
    expect(await caught).toBe(failure);
    expect(h.call("a").signal.aborted).toBe(true);
  });
});

describe("cancellation", () => {
  it("aborting the caller's signal aborts every running attempt and rejects with its reason", async () => {
    const h = harness(["a", "b"]);
    const controller = new AbortController();
    const done = dispatchWithRetry({ pick: h.pick, attempt: h.attempt, maxAttempts: 3, hedgeAfterMs: 100, signal: controller.signal });
    const caught = done.catch((e) => e);
    await vi.advanceTimersByTimeAsync(100);
    const reason = new Error("client went away");
    controller.abort(reason);
    expect(await caught).toBe(reason);
    expect(h.call("a").signal.aborted).toBe(true);
    expect(h.call("b").signal.aborted).toBe(true);
  });

  it("the winner's signal still follows the caller's after the first token", async () => {
    const h = harness(["a"]);
    const controller = new AbortController();
    const done = dispatchWithRetry({ pick: h.pick, attempt: h.attempt, maxAttempts: 3, signal: controller.signal });
    await settle();
    h.call("a").resolve("tok");
    await done;
    expect(h.call("a").signal.aborted).toBe(false);
    controller.abort(new Error("client went away"));
    expect(h.call("a").signal.aborted).toBe(true);
  });

  it("an already aborted signal starts nothing", async () => {
    const h = harness(["a"]);
    const controller = new AbortController();
    controller.abort(new Error("gone"));
    await expect(dispatchWithRetry({ pick: h.pick, attempt: h.attempt, maxAttempts: 3, signal: controller.signal })).rejects.toThrow(
      "gone",
    );
    expect(h.picks).toHaveLength(0);
  });
});
