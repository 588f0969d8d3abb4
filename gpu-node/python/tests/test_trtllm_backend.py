"""The GPU backend's glue, with stand-ins for the TensorRT-LLM bindings: which calls it makes and how it
reads the answers. (That the real bindings accept them is checked on a GPU host; see docs/gpu-node.md.)"""

import enum
import json
import os
import sys
import tempfile
import unittest
from types import SimpleNamespace

from qvl_worker.core import EnqueueArgs
from qvl_worker.trtllm_backend import TrtllmBackend, read_engine_config


class Recorder:
    """Records constructor calls: tle.Request(...) -> ("Request", kwargs)."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: (name, args, kwargs)


class FinishReason(enum.Enum):
    NOT_FINISHED = 0
    END_ID = 1
    STOP_WORDS = 2
    LENGTH = 3
    TIMED_OUT = 4
    CANCELLED = 5


class FakeResponse:
    def __init__(self, request_id, error=None, **result):
        self.request_id = request_id
        self._error = error
        self.error_msg = error
        self.result = SimpleNamespace(**result)

    def has_error(self):
        return self._error is not None


class FakeExecutor:
    def __init__(self, responses=()):
        self.requests = []
        self.cancelled = []
        self.responses = list(responses)
        self.timeouts = []

    def enqueue_request(self, request):
        self.requests.append(request)
        return 41 + len(self.requests)

    def cancel_request(self, request_id):
        self.cancelled.append(request_id)

    def await_responses(self, timeout=None):
        self.timeouts.append(timeout)
        out, self.responses = self.responses, []
        return out


def backend(executor=None):
    return TrtllmBackend(tle=Recorder(), executor=executor or FakeExecutor())


class BackendGlueTest(unittest.TestCase):
    def test_importing_the_package_needs_no_gpu_stack(self):
        heavy = {"torch", "tensorrt", "tensorrt_llm", "transformers"}
        before = heavy & set(sys.modules)
        import qvl_worker.__main__  # noqa: F401
        import qvl_worker.build_vit  # noqa: F401
        import qvl_worker.check_gpu  # noqa: F401
        import qvl_worker.server  # noqa: F401
        import qvl_worker.trtllm_backend  # noqa: F401

        self.assertEqual(heavy & set(sys.modules), before)

    def test_enqueue_builds_one_streaming_request_with_the_prompt_table(self):
        ex = FakeExecutor()
        table = object()
        args = EnqueueArgs([1, 2, 151936], 100, {"temperature": 0}, 151645, 151643, [151644, 151643], table, True)
        self.assertEqual(backend(ex).enqueue(args), 42)
        name, _, kw = ex.requests[0]
        self.assertEqual(name, "Request")
        self.assertEqual(kw["input_token_ids"], [1, 2, 151936])
        self.assertEqual(kw["max_tokens"], 100)
        self.assertIs(kw["streaming"], True)
        self.assertEqual((kw["end_id"], kw["pad_id"]), (151645, 151643))
        self.assertEqual(kw["stop_words"], [[151644], [151643]])
        self.assertEqual(kw["prompt_tuning_config"], ("PromptTuningConfig", (), {"embedding_table": table}))
        self.assertEqual(kw["output_config"], ("OutputConfig", (), {"return_log_probs": True, "exclude_input_from_output": True}))
        self.assertEqual(kw["sampling_config"], ("SamplingConfig", (1,), {"top_k": 1}))

    def test_no_images_no_prompt_table(self):
        ex = FakeExecutor()
        backend(ex).enqueue(EnqueueArgs([1], 5, {}, 151643, 151643, [], None, False))
        kw = ex.requests[0][2]
        self.assertIsNone(kw["prompt_tuning_config"])
        self.assertIsNone(kw["stop_words"])

    def test_sampling(self):
        b = backend()
        cfg = b._sampling({"temperature": 0.7, "top_p": 0.9, "top_k": 40, "repetition_penalty": 1.1, "seed": 7})
        self.assertEqual(cfg, ("SamplingConfig", (1,), {"temperature": 0.7, "top_p": 0.9, "top_k": 40, "repetition_penalty": 1.1, "seed": 7}))
        cfg = b._sampling({"temperature": 1, "top_p": 1, "top_k": 0, "repetition_penalty": 1})
        self.assertEqual(cfg, ("SamplingConfig", (1,), {"temperature": 1.0, "top_p": 1.0}))

    def test_poll_reads_streamed_results(self):
        ex = FakeExecutor(
            [
                FakeResponse(42, output_token_ids=[[5, 6]], log_probs=[[-0.1, -0.2]], is_final=False, finish_reasons=[FinishReason.NOT_FINISHED]),
                FakeResponse(42, output_token_ids=[[7]], log_probs=None, is_final=True, finish_reasons=[FinishReason.END_ID]),
                FakeResponse(43, output_token_ids=[[]], log_probs=None, is_final=True, finish_reasons=[FinishReason.CANCELLED]),
                FakeResponse(44, error="out of KV cache blocks"),
            ]
        )
        got = backend(ex).poll(0.02)
        self.assertEqual([(r.backend_id, list(r.tokens), r.final, r.finish_reason, r.error) for r in got], [
            (42, [5, 6], False, None, None),
            (42, [7], True, "end_id", None),
            (43, [], True, "cancelled", None),
            (44, [], True, None, "out of KV cache blocks"),
        ])
        self.assertEqual(got[0].logprobs, [-0.1, -0.2])
        self.assertAlmostEqual(ex.timeouts[0].total_seconds(), 0.02)

    def test_cancel(self):
        ex = FakeExecutor()
        backend(ex).cancel(42)
        self.assertEqual(ex.cancelled, [42])

    def test_read_engine_config(self):
        with tempfile.TemporaryDirectory() as d:
            os.makedirs(os.path.join(d, "llm"))
            with open(os.path.join(d, "llm", "config.json"), "w") as f:
                json.dump(
                    {
                        "pretrained_config": {"vocab_size": 151936, "hidden_size": 4096, "dtype": "float16"},
                        "build_config": {"max_batch_size": 8, "max_input_len": 2048, "max_seq_len": 3072, "max_prompt_embedding_table_size": 2048},
                    },
                    f,
                )
            cfg = read_engine_config(d)
            self.assertEqual((cfg["vocab_size"], cfg["max_table_rows"], cfg["variant"]), (151936, 2048, None))
            with open(os.path.join(d, "manifest.json"), "w") as f:
                json.dump({"checkpoint": {"variant": "qwen-vl-chat"}}, f)
            self.assertEqual(read_engine_config(d)["variant"], "qwen-vl-chat")


class MainArgsTest(unittest.TestCase):
    def test_arguments(self):
        from qvl_worker.__main__ import parse_args

        a = parse_args(["--engine-dir", "/e", "--capacity", "4"])
        self.assertEqual((a.engine_dir, a.capacity, a.tokenizer_dir, a.kv_cache_fraction), ("/e", 4, None, 0.85))


if __name__ == "__main__":
    unittest.main()
