"""The worker's process loop: framed messages on stdin/stdout, engine responses, one thread that decides.

Three threads: a reader (blocking frame reads from the agent), a poller (blocking ``backend.poll``, i.e.
``Executor.await_responses``), and the main thread, which owns all state (core.Worker) and is the only
writer of stdout. The other two only put items on one queue, so there is no shared mutable state.

stdout is the IPC channel, and native libraries (TensorRT, TensorRT-LLM's C++ logger) print to fd 1.
:func:`claim_stdout` moves the channel to a private duplicate of fd 1 and points fd 1 at stderr, so a
stray print can never corrupt a frame.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import traceback
from typing import BinaryIO, Callable, NoReturn

from .core import Backend, Worker
from .framing import FramingError, encode, read_message

EXIT_OK = 0
EXIT_ENGINE_FAILED = 1
EXIT_PROTOCOL = 2
EXIT_LOAD_FAILED = 3


def die_with_parent() -> None:
    """Linux: SIGKILL this process when the agent that spawned it dies (the agent puts the worker in its
    own process group, so nothing else would stop it while it holds the GPU). Best effort elsewhere."""
    try:
        import ctypes
        import signal

        parent = os.getppid()
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:  # the agent died before prctl took effect
            os._exit(EXIT_ENGINE_FAILED)
    except Exception:
        pass


def claim_stdout() -> BinaryIO:
    """Returns a binary stream on the original stdout; fd 1 (and ``sys.stdout``) now go to stderr."""
    sys.stdout.flush()
    channel = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return channel


def serve(
    load_backend: Callable[[Callable[[str, str], None]], Backend],
    ipc_in: BinaryIO,
    ipc_out: BinaryIO,
    *,
    poll_timeout_s: float = 0.02,
) -> int:
    """Runs until ``shutdown``, end of input, or an engine failure. Returns the exit code."""
    lock = threading.Lock()

    def send(body: dict, payload: bytes = b"") -> None:
        frame = encode(body, payload)
        with lock:
            ipc_out.write(frame)
            ipc_out.flush()

    def log(level: str, message: str) -> None:
        send({"type": "log", "level": level, "message": message})

    inbox: "queue.Queue[tuple]" = queue.Queue()
    stop = threading.Event()

    def reader() -> None:
        try:
            while True:
                msg = read_message(ipc_in)
                if msg is None:
                    inbox.put(("eof",))
                    return
                inbox.put(("msg", msg.body, msg.payload))
        except FramingError as exc:
            inbox.put(("framing", exc))
        except Exception as exc:  # a closed pipe while stopping
            inbox.put(("framing", FramingError("truncated", str(exc))))

    threading.Thread(target=reader, name="qvl-reader", daemon=True).start()

    try:
        backend = load_backend(log)
    except Exception as exc:
        send({"type": "error", "code": "engine_unavailable", "message": f"engine failed to load: {exc}", "retryable": True})
        traceback.print_exc(file=sys.stderr)
        return EXIT_LOAD_FAILED

    worker = Worker(backend, send)

    def poller() -> None:
        while not stop.is_set():
            try:
                responses = backend.poll(poll_timeout_s)
            except Exception as exc:
                inbox.put(("fatal", f"engine failed: {exc}"))
                return
            if responses:
                inbox.put(("responses", responses))

    threading.Thread(target=poller, name="qvl-poller", daemon=True).start()

    code = EXIT_OK
    try:
        while True:
            item = inbox.get()
            kind = item[0]
            if kind == "responses":
                try:
                    worker.on_responses(item[1])
                except Exception as exc:  # state may be inconsistent now: end every request, restart
                    traceback.print_exc(file=sys.stderr)
                    worker.fail_all(f"worker error: {exc}")
                    code = EXIT_ENGINE_FAILED
                    break
            elif kind == "msg":
                body, payload = item[1], item[2]
                try:
                    if not worker.handle(body, payload):
                        code = EXIT_PROTOCOL if body.get("type") == "hello" else EXIT_OK
                        break
                except Exception as exc:  # a bug for one request must not take the others down
                    traceback.print_exc(file=sys.stderr)
                    req_id = body.get("id")
                    err = {"type": "error", "code": "internal_error", "message": f"worker error: {exc}", "retryable": True}
                    if isinstance(req_id, str):
                        err["id"] = req_id
                        worker.requests.pop(req_id, None)
                    send(err)
            elif kind == "eof":
                break
            elif kind == "framing":
                send({"type": "error", "code": "internal_error", "message": f"bad frame from agent: {item[1]}", "retryable": False})
                code = EXIT_PROTOCOL
                break
            elif kind == "fatal":
                worker.fail_all(item[1])
                code = EXIT_ENGINE_FAILED
                break
    finally:
        stop.set()
        try:
            for req_id in list(worker.requests):
                worker.cancel(req_id)
            backend.shutdown()
        except Exception:
            traceback.print_exc(file=sys.stderr)
    return code


def main_with(load_backend: Callable[[Callable[[str, str], None]], Backend]) -> NoReturn:
    """Entry used by ``python -m qvl_worker`` (and by test doubles that bring their own backend).

    Ends the process itself with ``os._exit``: the reader thread is blocked in a read of stdin and the
    engine's native threads may still be winding down, and interpreter finalization with either of those
    alive can hang or abort instead of exiting with the code the agent should see.
    """
    if sys.platform.startswith("linux"):
        die_with_parent()
    channel = claim_stdout()
    # Unbuffered: a BufferedReader's lock held by the blocked reader thread aborts interpreter shutdown.
    ipc_in = os.fdopen(os.dup(0), "rb", buffering=0)
    try:
        code = serve(load_backend, ipc_in, channel)
    except BaseException:
        traceback.print_exc(file=sys.stderr)
        code = EXIT_ENGINE_FAILED
    sys.stderr.flush()
    os._exit(code)
