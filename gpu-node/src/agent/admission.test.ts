/**
 * Admission control with a fake clock: capacity, the bounded FIFO queue, deadlines, cancellation, drain.
 */
import { describe, expect, it } from "vitest";
import { Admission, type AdmissionClock, AdmissionError } from "./admission";

function fakeClock() {
  let now = 0;
  const timers = new Map<number, { at: number; fn: () => void }>();
  let next = 1;
  const clock: AdmissionClock & { advance(ms: number): void } = {
    now: () => now,
    setTimeout(fn, ms) {
      const id = next++;
      timers.set(id, { at: now + ms, fn });
      return id;
    },
    clearTimeout(id) {
      timers.delete(id as number);
    },
    advance(ms) {
      now += ms;
      for (const [id, t] of [...timers].sort((a, b) => a[1].at - b[1].at)) {
        if (t.at <= now) {
          timers.delete(id);
          t.fn();
        }
      }
    },
  };
  return clock;
}

const code = (p: Promise<unknown>) =>
  p.then(
    () => "admitted",
    (e: AdmissionError) => e.code,
  );

describe("Admission", () => {
  it("runs up to capacity, queues FIFO up to maxQueue, refuses beyond with overloaded", async () => {
    const a = new Admission({ capacity: 2, maxQueue: 2 });
    const r1 = await a.acquire();
    await a.acquire();
    const order: number[] = [];
    const q1 = a.acquire().then((release) => {
      order.push(1);
      return release;
    });
    const q2 = a.acquire().then((release) => {
      order.push(2);
      return release;
    });
    expect({ active: a.active, queued: a.queued }).toEqual({ active: 2, queued: 2 });
    expect(a.refusal()?.code).toBe("overloaded");
    expect(await code(a.acquire())).toBe("overloaded");
    r1();
    r1(); // idempotent: the second call frees nothing
    const release1 = await q1;
    expect(order).toEqual([1]);
    expect({ active: a.active, queued: a.queued }).toEqual({ active: 2, queued: 1 });
    release1();
    (await q2)();
    expect(order).toEqual([1, 2]);
    expect(a.active).toBe(1);
  });

  it("refuses a queued request whose deadline passes, and one already past", async () => {
    const clock = fakeClock();
    const a = new Admission({ capacity: 1, maxQueue: 4, clock });
    const running = await a.acquire();
    const late = code(a.acquire({ deadlineAt: 100 }));
    const patient = a.acquire({ deadlineAt: 1_000 });
    clock.advance(99);
    expect(a.queued).toBe(2);
    clock.advance(1);
    expect(await late).toBe("deadline_exceeded");
    expect(a.queued).toBe(1);
    running();
    (await patient)();
    expect(await code(a.acquire({ deadlineAt: clock.now() }))).toBe("deadline_exceeded");
    expect(a.active).toBe(0);
  });

  it("takes a request out of the queue when its client goes away", async () => {
    const a = new Admission({ capacity: 1, maxQueue: 2 });
    const running = await a.acquire();
    const gone = new AbortController();
    const p = code(a.acquire({ signal: gone.signal }));
    gone.abort();
    expect(await p).toBe("cancelled");
    expect(a.queued).toBe(0);
    running();
    expect(a.active).toBe(0);
  });

  it("draining refuses new and queued requests; running ones finish; idle() resolves after", async () => {
    const a = new Admission({ capacity: 1, maxQueue: 2 });
    const running = await a.acquire();
    const queued = code(a.acquire());
    let idle = false;
    const idlePromise = a.idle().then(() => {
      idle = true;
    });
    a.drain();
    expect(await queued).toBe("draining");
    expect(await code(a.acquire())).toBe("draining");
    expect(a.refusal()?.code).toBe("draining");
    await Promise.resolve();
    expect(idle).toBe(false);
    running();
    await idlePromise;
    expect(idle).toBe(true);
  });

  it("refuses bad options", () => {
    expect(() => new Admission({ capacity: 0, maxQueue: 1 })).toThrow(TypeError);
    expect(() => new Admission({ capacity: 1, maxQueue: -1 })).toThrow(TypeError);
    expect(new AdmissionError("overloaded", "x")).toBeInstanceOf(Error);
  });
});
