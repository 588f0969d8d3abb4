import unittest

from qvl_worker.core import IMAGE_BYTES, BackendResponse, Worker

from .fakes import FakeBackend, tokens
from .toy_tokenizer import VOCAB_SIZE, text_ids

V = VOCAB_SIZE
IM_END, IM_START, EOT = 151645, 151644, 151643


def header(prompts, images=0, dtype="u8", **sampling):
    length = IMAGE_BYTES[dtype]
    return {
        "version": 1,
        "request_id": "edge-1",
        "variant": sampling.pop("variant", "qwen-vl-chat"),
        "prompts": prompts,
        "images": [
            {"dtype": dtype, "shape": [448, 448, 3] if dtype == "u8" else [3, 448, 448], "offset": i * length, "length": length, "sha256": "0" * 64}
            for i in range(images)
        ],
        "sampling": {"max_tokens": 64, "temperature": 0, "top_p": 1, "top_k": 0, "repetition_penalty": 1, "stop": [], **sampling},
    }


def payload(images, dtype="u8"):
    return b"".join(bytes([i + 1]) * IMAGE_BYTES[dtype] for i in range(images))


CHAT = [
    {"type": "template", "text": "<|im_start|>user\nPicture 1: "},
    {"type": "image", "index": 0},
    {"type": "template", "text": "\n"},
    {"type": "user", "text": "What is it?"},
    {"type": "template", "text": "<|im_end|>\n<|im_start|>assistant\n"},
]


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        self.t += 0.001
        return self.t


class WorkerTest(unittest.TestCase):
    def setUp(self):
        self.backend = FakeBackend()
        self.sent = []
        self.worker = Worker(self.backend, lambda body, payload=b"": self.sent.append(body), clock=Clock())

    def take(self, kind=None):
        out = [m for m in self.sent if kind is None or m["type"] == kind]
        self.sent = [m for m in self.sent if not (kind is None or m["type"] == kind)]
        return out

    def generate(self, prompts, images=1, req_id="r1", dtype="u8", **sampling):
        return self.worker.handle(
            {"type": "generate", "id": req_id, "header": header(prompts, images, dtype, **sampling), "payload_bytes": images * IMAGE_BYTES[dtype]},
            payload(images, dtype),
        )

    def test_hello_answers_ready(self):
        self.assertTrue(self.worker.handle({"type": "hello", "protocol": 1}))
        (ready,) = self.take()
        self.assertEqual(ready["type"], "ready")
        self.assertEqual(ready["engine"], "trtllm")
        self.assertEqual(ready["capacity"], 4)
        self.assertEqual(ready["vocab_size"], V)

    def test_protocol_mismatch_stops_the_worker(self):
        self.assertFalse(self.worker.handle({"type": "hello", "protocol": 99}))
        self.assertEqual(self.take()[0]["type"], "error")

    def test_one_vision_pass_shared_by_every_prompt(self):
        self.generate([CHAT, CHAT[:2] + [{"type": "template", "text": "\nDescribe."}]], images=1)
        self.assertEqual(len(self.backend.images), 1)
        self.assertEqual(self.backend.images[0][0][0], "u8")
        self.assertEqual(self.backend.images[0][0][1], b"\x01" * IMAGE_BYTES["u8"])
        (a, b) = self.backend.enqueued.values()
        self.assertIs(a.table, b.table)
        self.assertEqual(a.input_ids.count(151857), 1)
        self.assertEqual([i for i in a.input_ids if i >= V], list(range(V, V + 256)))
        self.assertEqual(a.end_id, IM_END)
        self.assertEqual(sorted(a.stop_token_ids), sorted([IM_START, EOT]))
        self.assertEqual(a.max_tokens, 64)
        self.assertEqual(self.sent, [])

    def test_streamed_tokens_then_done(self):
        self.generate([CHAT])
        (bid,) = self.backend.enqueued
        self.worker.on_responses([tokens(bid, text_ids("A dog"))])
        self.worker.on_responses([tokens(bid, text_ids(" on grass.") + [IM_END], final=True, reason="end_id")])
        tok = self.take("token")
        self.assertEqual([t["text"] for t in tok], ["A dog", " on grass."])
        self.assertEqual([t["tokens"] for t in tok], [5, 10])
        self.assertTrue(all(t["id"] == "r1" and t["prompt"] == 0 for t in tok))
        (done,) = self.take("done")
        self.assertEqual(done["finish_reason"], "stop")
        self.assertEqual(done["usage"]["completion_tokens"], 15)
        self.assertEqual(done["usage"]["prompt_tokens"], len(self.backend.enqueued[bid].input_ids))
        self.assertEqual(set(done["timings"]), {"queue_ms", "vision_ms", "prefill_ms", "decode_ms"})
        self.assertEqual(self.worker.requests, {})

    def test_cjk_split_across_responses_is_never_half_a_character(self):
        self.generate([CHAT])
        (bid,) = self.backend.enqueued
        ids = text_ids("狗")
        self.worker.on_responses([tokens(bid, ids[:2])])
        self.assertEqual(self.take("token"), [])
        self.worker.on_responses([tokens(bid, ids[2:], final=True, reason="length")])
        (tok,) = self.take("token")
        self.assertEqual((tok["text"], tok["tokens"]), ("狗", 3))
        self.assertEqual(self.take("done")[0]["finish_reason"], "length")

    def test_stop_token_ends_the_prompt_and_the_engine_request(self):
        self.generate([CHAT])
        (bid,) = self.backend.enqueued
        self.worker.on_responses([tokens(bid, text_ids("Yes.") + [IM_START] + text_ids("user"))])
        self.assertEqual([t["text"] for t in self.take("token")], ["Yes."])
        (done,) = self.take("done")
        self.assertEqual((done["finish_reason"], done["usage"]["completion_tokens"]), ("stop", 4))
        self.assertEqual(self.backend.cancelled, [bid])
        # The engine's late final response is ignored.
        self.worker.on_responses([tokens(bid, [], final=True, reason="cancelled")])
        self.assertEqual(self.sent, [])

    def test_stop_string_split_across_tokens(self):
        self.generate([CHAT], stop=["\n\n"])
        (bid,) = self.backend.enqueued
        self.worker.on_responses([tokens(bid, text_ids("One.\n"))])
        self.worker.on_responses([tokens(bid, text_ids("\nTwo"))])
        self.assertEqual("".join(t["text"] for t in self.take("token")), "One.")
        self.assertEqual(self.take("done")[0]["finish_reason"], "stop")
        self.assertEqual(self.backend.cancelled, [bid])

    def test_base_model_stops_on_endoftext(self):
        self.generate([[{"type": "image", "index": 0}, {"type": "template", "text": "Describe the image in English:"}]], variant="qwen-vl")
        (bid,) = self.backend.enqueued
        self.assertEqual(self.backend.enqueued[bid].end_id, EOT)
        self.worker.on_responses([tokens(bid, text_ids(" A cat.") + [EOT], final=True, reason="end_id")])
        self.assertEqual(self.take("token")[0]["text"], " A cat.")
        self.assertEqual(self.take("done")[0]["finish_reason"], "stop")

    def test_logprobs(self):
        self.generate([CHAT], logprobs=0)
        (bid,) = self.backend.enqueued
        self.assertTrue(self.backend.enqueued[bid].logprobs)
        self.worker.on_responses([tokens(bid, text_ids("Hi"), final=True, reason="length", logprobs=[-0.5, -0.25])])
        (tok,) = self.take("token")
        self.assertEqual(tok["logprobs"], [{"token": "H", "logprob": -0.5}, {"token": "i", "logprob": -0.25}])

    def test_cancel_reaches_every_prompt_and_each_ends_cancelled(self):
        self.generate([CHAT, CHAT])
        ids = list(self.backend.enqueued)
        self.worker.on_responses([tokens(ids[0], text_ids("Partial"))])
        self.take()
        self.worker.handle({"type": "cancel", "id": "r1"})
        self.assertEqual(sorted(self.backend.cancelled), sorted(ids))
        self.worker.on_responses([tokens(i, [], final=True, reason="cancelled") for i in ids])
        done = self.take("done")
        self.assertEqual([d["finish_reason"] for d in done], ["cancelled", "cancelled"])
        self.assertEqual(self.worker.requests, {})

    def test_cancel_of_unknown_request_is_ignored(self):
        self.worker.handle({"type": "cancel", "id": "nope"})
        self.worker.handle({"type": "cancel"})
        self.assertEqual(self.sent, [])

    def test_engine_error_fails_the_request_and_the_worker_keeps_serving(self):
        self.generate([CHAT, CHAT])
        first, second = list(self.backend.enqueued)
        self.worker.on_responses([BackendResponse(second, final=True, error="CUDA error: an illegal memory access")])
        (err,) = self.take("error")
        self.assertEqual((err["id"], err["prompt"], err["code"], err["retryable"]), ("r1", 1, "engine_failed", True))
        self.assertEqual(self.backend.cancelled, [first])
        self.worker.on_responses([tokens(first, text_ids("late"), final=True, reason="cancelled")])
        self.assertEqual(self.sent, [])
        # The next request is served.
        self.generate([CHAT], req_id="r2")
        bid = max(self.backend.enqueued)
        self.worker.on_responses([tokens(bid, text_ids("ok"), final=True, reason="end_id")])
        self.assertEqual([m["type"] for m in self.take()], ["token", "done"])

    def test_vision_failure_is_a_retryable_error_for_that_request(self):
        self.backend.fail_images = "out of memory"
        self.generate([CHAT])
        (err,) = self.take("error")
        self.assertEqual((err["id"], err["code"], err["retryable"]), ("r1", "engine_failed", True))
        self.assertEqual(self.backend.enqueued, {})
        self.assertEqual(self.worker.requests, {})

    def test_enqueue_failure_cancels_the_prompts_already_enqueued(self):
        self.backend.fail_enqueue_at = 1
        self.generate([CHAT, CHAT])
        (err,) = self.take("error")
        self.assertEqual(err["code"], "engine_failed")
        self.assertEqual(self.backend.cancelled, list(self.backend.enqueued))
        self.assertEqual(self.worker.requests, {})

    def test_invalid_requests_are_refused_without_touching_the_engine(self):
        length = IMAGE_BYTES["u8"]
        cases = {
            "unknown image": ({"header": header([[{"type": "image", "index": 1}]], 1)}, payload(1)),
            "short payload": ({"header": header([CHAT], 1)}, payload(1)[:-1]),
            "wrong length": ({"header": {**header([CHAT], 1), "images": [{"dtype": "u8", "offset": 0, "length": length - 1}]}}, payload(1)),
            "bad dtype": ({"header": {**header([CHAT], 1), "images": [{"dtype": "f32", "offset": 0, "length": length}]}}, payload(1)),
            "overlap": (
                {"header": {**header([CHAT], 2), "images": [{"dtype": "u8", "offset": 0, "length": length}, {"dtype": "u8", "offset": 5, "length": length}]}},
                payload(2),
            ),
            "variant": ({"header": header([CHAT], 1, variant="gpt-4")}, payload(1)),
            "no prompts": ({"header": header([], 1)}, payload(1)),
            "template image": ({"header": header([[{"type": "template", "text": "<img>a.jpg</img>"}]], 0)}, b""),
            "too long": ({"header": header([[{"type": "user", "text": "x" * 2049}]], 0)}, b""),
            "no header": ({}, b""),
        }
        for name, (extra, data) in cases.items():
            with self.subTest(name):
                self.assertTrue(self.worker.handle({"type": "generate", "id": "bad", **extra}, data))
                (err,) = self.take()
                self.assertEqual((err["type"], err["id"], err["code"], err["retryable"]), ("error", "bad", "invalid_frame", False))
        self.assertEqual((self.backend.images, self.backend.enqueued), ([], {}))

    def test_max_tokens_is_capped_by_the_engine(self):
        self.generate([CHAT[:3] + [{"type": "user", "text": "x" * 1200}] + CHAT[4:]], max_tokens=2048)
        (args,) = self.backend.enqueued.values()
        self.assertLess(3072 - len(args.input_ids), 2048)
        self.assertEqual(args.max_tokens, 3072 - len(args.input_ids))

    def test_duplicate_id_refused(self):
        self.generate([CHAT])
        self.generate([CHAT])
        (err,) = self.take("error")
        self.assertEqual(err["code"], "invalid_frame")
        self.assertEqual(len(self.backend.enqueued), 1)

    def test_f16_images_and_no_images(self):
        self.generate([[{"type": "image", "index": 0}]], images=1, dtype="f16")
        self.assertEqual(self.backend.images[0][0][0], "f16")
        self.generate([[{"type": "user", "text": "hi"}]], images=0, req_id="r2")
        args = self.backend.enqueued[max(self.backend.enqueued)]
        self.assertIsNone(args.table)
        self.assertEqual(len(self.backend.images), 1)

    def test_engine_failure_fails_everything(self):
        self.generate([CHAT])
        self.generate([CHAT], req_id="r2")
        self.worker.fail_all("executor died")
        (err,) = self.take("error")
        self.assertNotIn("id", err)
        self.assertEqual((err["code"], err["retryable"]), ("engine_failed", True))
        self.assertEqual(self.worker.requests, {})

    def test_shutdown_cancels_and_stops(self):
        self.generate([CHAT])
        self.assertFalse(self.worker.handle({"type": "shutdown"}))
        self.assertEqual(self.backend.cancelled, list(self.backend.enqueued))


if __name__ == "__main__":
    unittest.main()
