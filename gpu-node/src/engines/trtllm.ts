/**
 * The `trtllm` engine: Qwen-VL on TensorRT-LLM, run by a Python worker (`python3 -m qvl_worker`, in
 * gpu-node/python) that this module spawns, supervises and talks to over framed stdio (worker-ipc.ts).
 *
 * - start(): spawns the worker, sends `hello`, resolves on `ready` (loading engines takes minutes). A worker
 *   that fails before its first `ready` rejects start(): a bad engine directory does not heal by retrying.
 * - generate(): one `generate` message (header + the request's tensors as the payload); the worker's
 *   `token`/`done`/`error` messages become protocol events. Aborting the signal (or dropping the iterator)
 *   sends `cancel`, which the worker turns into `Executor.cancel_request`.
 * - Worker death: every in-flight request gets a retryable `engine_failed` error, health turns red, and the
 *   worker is restarted with exponential backoff. An `error` from the engine itself also turns health red,
 *   until the next request completes.
 *
 * Supervision (spawn, restart with capped backoff, SIGTERM → timeout → SIGKILL) is the shared
 * supervisor/supervisor.ts; this module adds the worker's own graceful `shutdown` message before it.
 */
import { type ChildProcess, type ChildProcessByStdio, spawn } from "node:child_process";
import type { Readable, Writable } from "node:stream";
import { fileURLToPath } from "node:url";
import { type ErrorEvent, type NodeErrorCode, NodeEvent } from "../../../src/protocol/index";
import { type ExitInfo, Supervisor } from "../supervisor/supervisor";
import type { Engine, EngineHealth, GenerateRequest } from "./engine";
import { encodeMessage, type IpcMessage, MessageDecoder } from "./worker-ipc";

export interface TrtllmEngineOptions {
  /** Output of `gpu-node build` (vision/, llm/, tokenizer/, manifest.json). */
  engineDir: string;
  /** Python with TensorRT-LLM installed (default `python3`). */
  python?: string;
  /** In-flight batch size; default (and maximum) the engine's max batch size, as the worker reports it. */
  capacity?: number;
  tokenizerDir?: string;
  /** Share of free GPU memory given to the KV cache (worker default 0.85). */
  kvCacheFraction?: number;
  /** Full argv to run instead of `python -m qvl_worker …` (tests run a fake worker). */
  command?: readonly string[];
  /** Working directory of the worker (default gpu-node/python, which is also put on PYTHONPATH). */
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** Loading may take this long before the worker is killed (default 15 minutes). */
  readyTimeoutMs?: number;
  /** Restart after a crash (default on: 1 s doubling to 30 s, via the supervisor); `false` leaves it down. */
  restart?: false | { initialDelayMs?: number; maxDelayMs?: number };
  /** After `shutdown`, how long to wait before SIGTERM, and again before SIGKILL (default 10 s). */
  stopTimeoutMs?: number;
  /** The worker's `log` messages (default: to stderr). */
  onLog?: (level: string, message: string) => void;
  /** The worker's own stderr (Python tracebacks, TensorRT-LLM's logger); default: inherited. */
  onStderr?: (text: string) => void;
}

interface ReadyInfo {
  version: string;
  capacity: number;
  vocab_size: number;
  variant?: string | null;
}

type Child = ChildProcessByStdio<Writable, Readable, Readable | null>;

const PYTHON_DIR = fileURLToPath(new URL("../../python", import.meta.url));
const END = Symbol("end");

/** Events of one request, pushed by the message loop and pulled by generate(). */
class EventQueue {
  private items: Array<NodeEvent | typeof END> = [];
  private waiter: (() => void) | undefined;
  ended = false;

  push(item: NodeEvent | typeof END): void {
    if (this.ended) return;
    if (item === END) this.ended = true;
    this.items.push(item);
    this.waiter?.();
    this.waiter = undefined;
  }

  async next(): Promise<NodeEvent | typeof END> {
    while (this.items.length === 0) await new Promise<void>((resolve) => (this.waiter = resolve));
    return this.items.shift()!;
  }
}

interface Inflight {
  queue: EventQueue;
  promptsLeft: number;
}

export function createTrtllmEngine(
  options: TrtllmEngineOptions,
): Engine & { readonly variant: string | undefined; readonly restarts: number } {
  if (!options.engineDir && !options.command) throw new Error("trtllm engine: engineDir is required");
  const readyTimeoutMs = options.readyTimeoutMs ?? 15 * 60_000;
  const stopTimeoutMs = options.stopTimeoutMs ?? 10_000;
  const onLog = options.onLog ?? ((level, message) => process.stderr.write(`qvl_worker ${level}: ${message}\n`));

  let child: Child | undefined;
  let ready: ReadyInfo | undefined;
  let state: "idle" | "starting" | "ready" | "down" | "closed" = "idle";
  let downDetail = "not started";
  let engineError: string | undefined;
  let everReady = false;
  let seq = 0;
  const inflight = new Map<string, Inflight>();
  let pendingStart: { resolve: () => void; reject: (err: Error) => void } | undefined;
  let starting: Promise<void> | undefined;

  const [command, ...args] = options.command
    ? [...options.command]
    : [
        options.python ?? "python3",
        ...["-m", "qvl_worker", "--engine-dir", options.engineDir],
        ...(options.tokenizerDir ? ["--tokenizer-dir", options.tokenizerDir] : []),
        ...(options.capacity ? ["--capacity", String(options.capacity)] : []),
        ...(options.kvCacheFraction ? ["--kv-cache-fraction", String(options.kvCacheFraction)] : []),
      ];
  const env: NodeJS.ProcessEnv = { ...process.env, ...options.env, PYTHONUNBUFFERED: "1" };
  env.PYTHONPATH = [PYTHON_DIR, env.PYTHONPATH].filter(Boolean).join(":");

  const supervisor = new Supervisor<ChildProcess>({
    command,
    args,
    env,
    cwd: options.cwd ?? PYTHON_DIR,
    stdio: ["pipe", "pipe", options.onStderr ? "pipe" : "inherit"],
    // Its own process group: a Ctrl-C (SIGINT to the terminal's group) or a SIGTERM meant for the agent
    // must not kill the worker under a drain; the agent stops it (shutdown, then signals). If the agent
    // itself dies, the worker sees its stdin close (and, on Linux, PR_SET_PDEATHSIG) and exits.
    spawn: (cmd, argv, opts) => spawn(cmd, argv, { ...opts, detached: true }),
    backoff: {
      initialMs: options.restart ? (options.restart.initialDelayMs ?? 1000) : 1000,
      maxMs: options.restart ? (options.restart.maxDelayMs ?? 30_000) : 30_000,
    },
    maxRestarts: options.restart === false ? 0 : undefined,
    stopTimeoutMs,
    // stdio is pipe/pipe/(pipe or inherit): stdin and stdout are always there.
    onStart: (proc) => attach(proc as Child),
    onExit: (info) => onExit(info),
  });

  function send(proc: Child | undefined, body: { type: string; [key: string]: unknown }, payload: Uint8Array[] = []): void {
    if (!proc || proc.exitCode !== null || proc.signalCode !== null || !proc.stdin.writable) return;
    proc.stdin.cork();
    for (const piece of encodeMessage(body, payload)) proc.stdin.write(piece);
    proc.stdin.uncork();
  }

  function failAll(code: NodeErrorCode, message: string): void {
    for (const [id, entry] of inflight) {
      entry.queue.push({ type: "error", code, message, retryable: true });
      entry.queue.push(END);
      inflight.delete(id);
    }
  }

  function onMessage(proc: Child, { body }: IpcMessage): void {
    if (proc !== child) return;
    const id = typeof body.id === "string" ? body.id : undefined;
    switch (body.type) {
      case "ready": {
        ready = {
          version: String(body.version ?? "unknown"),
          capacity: Number(body.capacity) || 1,
          vocab_size: Number(body.vocab_size),
          variant: typeof body.variant === "string" ? body.variant : undefined,
        };
        state = "ready";
        everReady = true;
        engineError = undefined;
        pendingStart?.resolve();
        pendingStart = undefined;
        return;
      }
      case "log":
        onLog(String(body.level ?? "info"), String(body.message ?? ""));
        return;
      case "token":
      case "done":
      case "error": {
        if (body.type === "error" && id === undefined) {
          // The engine itself failed (or could not load); the worker exits after saying so.
          engineError = String(body.message ?? "engine error");
          if (state !== "ready") downDetail = engineError;
          pendingStart?.reject(new Error(`trtllm worker: ${engineError}`));
          pendingStart = undefined;
          return;
        }
        const entry = id === undefined ? undefined : inflight.get(id);
        if (!entry) return; // a request we gave up on (aborted): late messages are expected
        const { id: _id, payload_bytes: _p, ...fields } = body;
        const parsed = NodeEvent.safeParse(body.type === "done" ? { ...fields, engine: "trtllm" } : fields);
        const event: NodeEvent = parsed.success
          ? parsed.data
          : { type: "error", code: "internal_error", message: `malformed ${body.type} message from the worker`, retryable: true };
        entry.queue.push(event);
        if (event.type === "error") {
          if (event.code === "engine_failed") engineError = event.message;
          entry.queue.push(END);
          inflight.delete(id!);
        } else if (event.type === "done") {
          engineError = undefined;
          if (--entry.promptsLeft === 0) {
            entry.queue.push(END);
            inflight.delete(id!);
          }
        }
        return;
      }
      default:
        onLog("warn", `unknown message type '${body.type}' from the worker`);
    }
  }

  function attach(proc: Child): void {
    child = proc;
    ready = undefined;
    if (state !== "closed") state = "starting";
    downDetail = "worker loading the engine";
    const decoder = new MessageDecoder();
    const loadTimer = setTimeout(() => {
      if (proc === child && state === "starting") {
        onLog("error", `worker not ready after ${readyTimeoutMs} ms; killing it`);
        proc.kill("SIGKILL");
      }
    }, readyTimeoutMs);
    loadTimer.unref();
    proc.once("exit", () => clearTimeout(loadTimer));
    proc.stdin.on("error", () => {}); // EPIPE when the worker dies: the exit handler deals with it
    if (options.onStderr) {
      const onStderr = options.onStderr;
      proc.stderr?.setEncoding("utf8").on("data", (text: string) => onStderr(text));
    }
    proc.stdout.on("data", (chunk: Buffer) => {
      let messages: IpcMessage[];
      try {
        messages = decoder.push(chunk);
      } catch (err) {
        onLog("error", `bad frame from the worker (${(err as Error).message}); killing it`);
        proc.kill("SIGKILL");
        return;
      }
      for (const m of messages) onMessage(proc, m);
    });
    send(proc, { type: "hello", protocol: 1 });
  }

  function onExit({ code, signal, error, restartInMs }: ExitInfo): void {
    child = undefined;
    ready = undefined;
    const why = error ? `worker could not start: ${error.message}` : `worker exited (${signal ? `signal ${signal}` : `code ${code}`})`;
    if (state === "closed") {
      failAll("engine_unavailable", "the engine is shutting down");
      if (supervisor.state !== "stopping") void supervisor.stop();
      return;
    }
    failAll("engine_failed", `the engine ${why}`);
    state = "down";
    downDetail = engineError ? `${why}: ${engineError}` : why;
    if (pendingStart || !everReady) {
      // Never became ready: a bad engine directory or environment does not heal by restarting.
      pendingStart?.reject(new Error(`trtllm ${downDetail}`));
      pendingStart = undefined;
      void supervisor.stop();
      return;
    }
    if (restartInMs !== null) onLog("warn", `${why}; restarting in ${restartInMs} ms`);
  }

  return {
    name: "trtllm",
    get version() {
      return ready?.version ?? "unknown";
    },
    get capacity() {
      return options.capacity ?? ready?.capacity ?? 1;
    },
    get variant() {
      return ready?.variant ?? undefined;
    },
    get restarts() {
      return Math.max(0, supervisor.starts - 1);
    },

    start(): Promise<void> {
      if (state === "ready") return Promise.resolve();
      if (state === "closed") return Promise.reject(new Error("trtllm engine is closed"));
      starting ??= new Promise<void>((resolve, reject) => {
        pendingStart = { resolve, reject };
        if (supervisor.state !== "running" && supervisor.state !== "backoff") supervisor.start();
      }).finally(() => {
        starting = undefined;
      });
      return starting;
    },

    async *generate(request: GenerateRequest, signal: AbortSignal): AsyncIterable<NodeEvent> {
      const proc = child;
      if (state !== "ready" || !proc) {
        yield {
          type: "error",
          code: "engine_unavailable",
          message: `the engine is not ready (${downDetail})`,
          retryable: true,
        } satisfies ErrorEvent;
        return;
      }
      if (signal.aborted) return;
      const id = `${request.header.request_id}#${++seq}`;
      const entry: Inflight = { queue: new EventQueue(), promptsLeft: request.header.prompts.length };
      inflight.set(id, entry);
      const cancel = () => {
        if (inflight.delete(id)) send(proc, { type: "cancel", id });
        entry.queue.push(END);
      };
      signal.addEventListener("abort", cancel, { once: true });
      try {
        // The worker gets the tensors back to back; offsets are rewritten to match its payload.
        let offset = 0;
        const images = request.header.images.map((d, i) => {
          const out = { ...d, offset, length: request.images[i].byteLength };
          offset += out.length;
          return out;
        });
        send(proc, { type: "generate", id, header: { ...request.header, images } }, request.images);
        for (;;) {
          const item = await entry.queue.next();
          if (item === END) return;
          yield item;
        }
      } finally {
        signal.removeEventListener("abort", cancel);
        // The consumer stopped early (client gone without an abort, or an exception): stop the work too.
        if (inflight.has(id)) cancel();
      }
    },

    health(): EngineHealth {
      if (state === "ready" && !engineError) return { ok: true };
      if (state === "ready") return { ok: false, detail: `engine error: ${engineError}` };
      return { ok: false, detail: state === "closed" ? "engine closed" : downDetail };
    },

    async close(): Promise<void> {
      if (state === "closed") return supervisor.stop();
      state = "closed";
      pendingStart?.reject(new Error("trtllm engine closed while starting"));
      pendingStart = undefined;
      failAll("engine_unavailable", "the engine is shutting down");
      const proc = child;
      if (proc && proc.exitCode === null && proc.signalCode === null) {
        // The worker's own shutdown first (cancels in the executor, shuts it down); signals if it hangs.
        const exited = new Promise<boolean>((resolve) => proc.once("exit", () => resolve(true)));
        send(proc, { type: "shutdown" });
        proc.stdin.end();
        await Promise.race([exited, new Promise<boolean>((resolve) => setTimeout(() => resolve(false), stopTimeoutMs).unref())]);
      }
      await supervisor.stop();
    },
  };
}
