"""A fake engine for the worker's state machine: records what the worker asks, answers what a test says."""

from qvl_worker.core import BackendResponse
from qvl_worker.prompt import QwenVocab

from .toy_tokenizer import VOCAB_SIZE, ToyQwenTokenizer


class FakeBackend:
    engine = "trtllm"
    version = "fake-1"
    capacity = 4
    vocab_size = VOCAB_SIZE
    max_input_len = 2048
    max_seq_len = 3072
    max_table_rows = 2048

    def __init__(self, variant=None):
        self.variant = variant
        self.vocab = QwenVocab(ToyQwenTokenizer())
        self.images = []
        self.enqueued = {}
        self.cancelled = []
        self.scripted = []
        self.fail_images = None
        self.fail_enqueue_at = None
        self.shut = False
        self._next = 100

    def encode_images(self, images):
        if self.fail_images:
            raise RuntimeError(self.fail_images)
        self.images.append([(img.dtype, bytes(img.data)) for img in images])
        return ("table", len(self.images))

    def enqueue(self, args):
        if self.fail_enqueue_at is not None and len(self.enqueued) == self.fail_enqueue_at:
            raise RuntimeError("no KV blocks")
        self._next += 1
        self.enqueued[self._next] = args
        return self._next

    def cancel(self, backend_id):
        self.cancelled.append(backend_id)

    def poll(self, timeout_s):
        out, self.scripted = self.scripted, []
        return out

    def shutdown(self):
        self.shut = True


def tokens(backend_id, ids, final=False, reason=None, logprobs=None):
    return BackendResponse(backend_id, list(ids), logprobs, final, reason)
