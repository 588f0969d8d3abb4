"""The process loop end to end over real pipes, with the fake engine."""

import contextlib
import io
import os
import threading
import unittest

from qvl_worker.core import IMAGE_BYTES
from qvl_worker.framing import encode, read_message
from qvl_worker.server import EXIT_LOAD_FAILED, EXIT_OK, EXIT_PROTOCOL, serve

from .fakes import FakeBackend, tokens
from .test_core import CHAT, header, payload
from .toy_tokenizer import text_ids


class ScriptedBackend(FakeBackend):
    """Answers each enqueued prompt with two token responses, the second final."""

    def enqueue(self, args):
        bid = super().enqueue(args)
        self.scripted += [tokens(bid, text_ids("你好")[:4]), tokens(bid, text_ids("你好")[4:] + [151645], final=True, reason="end_id")]
        return bid


class Harness:
    def __init__(self, load):
        to_worker_r, self.to_worker_w = os.pipe()
        self.from_worker_r, from_worker_w = os.pipe()
        self.win = os.fdopen(self.to_worker_w, "wb", buffering=0)
        self.rout = os.fdopen(self.from_worker_r, "rb")
        self.code = None
        wout = os.fdopen(from_worker_w, "wb", buffering=0)
        rin = os.fdopen(to_worker_r, "rb")

        def run():
            try:
                self.code = serve(load, rin, wout, poll_timeout_s=0.001)
            finally:
                wout.close()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def send(self, body, data=b""):
        self.win.write(encode(body, data))

    def recv_until(self, kind):
        got = []
        while True:
            msg = read_message(self.rout)
            if msg is None:
                return got
            got.append(msg.body)
            if msg.body["type"] == kind:
                return got

    def close(self):
        self.win.close()
        self.thread.join(5)
        self.rout.close()


class ServerTest(unittest.TestCase):
    def test_hello_generate_shutdown(self):
        backend = ScriptedBackend()
        h = Harness(lambda log: (log("info", "loaded"), backend)[1])
        h.send({"type": "hello", "protocol": 1})
        msgs = h.recv_until("ready")
        self.assertEqual([m["type"] for m in msgs], ["log", "ready"])
        h.send({"type": "generate", "id": "r1", "header": header([CHAT], 1)}, payload(1))
        msgs = h.recv_until("done")
        self.assertEqual([(m["type"], m.get("text")) for m in msgs], [("token", "你"), ("token", "好"), ("done", None)])
        self.assertEqual(len(backend.images[0][0][1]), IMAGE_BYTES["u8"])
        h.send({"type": "shutdown"})
        h.thread.join(5)
        self.assertEqual(h.code, EXIT_OK)
        self.assertTrue(backend.shut)
        h.close()

    def test_end_of_input_exits_cleanly(self):
        h = Harness(lambda log: FakeBackend())
        h.close()
        self.assertEqual(h.code, EXIT_OK)

    def test_bad_frame_from_agent_is_a_protocol_error(self):
        h = Harness(lambda log: FakeBackend())
        h.win.write(b"\x00\x00\x00\x05{bad}")
        msgs = h.recv_until("error")
        self.assertEqual(msgs[-1]["code"], "internal_error")
        h.thread.join(5)
        self.assertEqual(h.code, EXIT_PROTOCOL)
        h.close()

    def test_load_failure_is_reported(self):
        def load(log):
            raise RuntimeError("no GPU")

        with contextlib.redirect_stderr(io.StringIO()) as err:
            h = Harness(load)
            msgs = h.recv_until("error")
            h.thread.join(5)
        self.assertEqual((msgs[-1]["code"], msgs[-1]["retryable"]), ("engine_unavailable", True))
        self.assertIn("no GPU", msgs[-1]["message"])
        self.assertIn("RuntimeError: no GPU", err.getvalue())
        self.assertEqual(h.code, EXIT_LOAD_FAILED)
        h.close()

    def test_a_bug_in_one_request_does_not_stop_the_worker(self):
        backend = ScriptedBackend()
        original = backend.vocab.stop_token_ids
        calls = []

        def buggy(variant):
            calls.append(variant)
            if len(calls) == 1:
                raise KeyError("boom")  # not an engine error: a bug, caught by the loop
            return original(variant)

        backend.vocab.stop_token_ids = buggy
        h = Harness(lambda log: backend)
        with contextlib.redirect_stderr(io.StringIO()):
            h.send({"type": "generate", "id": "r1", "header": header([CHAT], 1)}, payload(1))
            err = h.recv_until("error")[-1]
        self.assertEqual((err["id"], err["code"], err["retryable"]), ("r1", "internal_error", True))
        h.send({"type": "generate", "id": "r2", "header": header([CHAT], 1)}, payload(1))
        self.assertEqual(h.recv_until("done")[-1]["id"], "r2")
        h.close()
        self.assertEqual(h.code, EXIT_OK)

if __name__ == "__main__":
    unittest.main()
