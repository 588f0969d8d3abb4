import unittest

from qvl_worker.detok import IncrementalDetokenizer
from qvl_worker.prompt import QwenVocab

from .toy_tokenizer import ToyQwenTokenizer, text_ids

VOCAB = QwenVocab(ToyQwenTokenizer())


def detok(stop=()):
    return IncrementalDetokenizer(VOCAB.token_bytes, stop)


class DetokTest(unittest.TestCase):
    def test_ascii_streams_immediately(self):
        d = detok()
        self.assertEqual(d.push(text_ids("Hello")), "Hello")
        self.assertEqual(d.push(text_ids(" world")), " world")
        self.assertEqual(d.finish(), "")

    def test_multibyte_character_split_across_tokens(self):
        d = detok()
        ids = text_ids("é")  # two bytes
        self.assertEqual(d.push(ids[:1]), "")
        self.assertEqual(d.push(ids[1:]), "é")

    def test_cjk_one_byte_at_a_time(self):
        text = "图中是一只狗。🐕"
        d = detok()
        out = []
        for i in text_ids(text):
            piece = d.push([i])
            self.assertNotIn("\ufffd", piece)
            out.append(piece)
        out.append(d.finish())
        self.assertEqual("".join(out), text)
        # Never half a character: every emitted piece is whole characters.
        self.assertTrue(all(p.encode("utf-8").decode("utf-8") == p for p in out))

    def test_special_tokens_come_out_as_text(self):
        d = detok()
        ids = [151851] + text_ids("狗") + [151852, 151853] + text_ids("(1,2),(3,4)") + [151854]
        self.assertEqual(d.push(ids) + d.finish(), "<ref>狗</ref><box>(1,2),(3,4)</box>")

    def test_truncated_sequence_at_end_is_reported(self):
        d = detok()
        self.assertEqual(d.push(text_ids("狗")[:2]), "")
        self.assertEqual(d.finish(), "\ufffd")

    def test_stop_string_split_across_tokens(self):
        d = detok(stop=["\n\nUser:"])
        self.assertEqual(d.push(text_ids("A cat.\n")), "A cat.")
        self.assertEqual(d.push(text_ids("\nUs")), "")
        self.assertFalse(d.stopped)
        self.assertEqual(d.push(text_ids("er: more")), "")
        self.assertTrue(d.stopped)
        self.assertEqual(d.stop_string, "\n\nUser:")
        self.assertEqual(d.push(text_ids("ignored")), "")
        self.assertEqual(d.finish(), "")

    def test_held_back_text_released_when_ruled_out(self):
        d = detok(stop=["STOP"])
        self.assertEqual(d.push(text_ids("go ST")), "go ")
        self.assertEqual(d.push(text_ids("OP")), "")
        self.assertTrue(d.stopped)
        d = detok(stop=["STOP"])
        self.assertEqual(d.push(text_ids("go ST")), "go ")
        self.assertEqual(d.push(text_ids("ART")), "START")

    def test_held_back_text_flushed_at_finish(self):
        d = detok(stop=["STOP"])
        self.assertEqual(d.push(text_ids("end S")), "end ")
        self.assertEqual(d.finish(), "S")

    def test_cjk_stop_string_split_inside_a_character(self):
        d = detok(stop=["。"])
        ids = text_ids("好。后")
        self.assertEqual(d.push(ids[:4]), "好")  # 好 + first byte of 。
        self.assertEqual(d.push(ids[4:]), "")
        self.assertTrue(d.stopped)

    def test_earliest_of_several_stop_strings_wins(self):
        d = detok(stop=["bb", "ab"])
        self.assertEqual(d.push(text_ids("xabb")), "x")
        self.assertEqual(d.stop_string, "ab")

    def test_stop_string_inside_one_token_batch(self):
        d = detok(stop=["</box>"])
        self.assertEqual(d.push(text_ids("(1,2)") + [151854] + text_ids("tail")), "(1,2)")


if __name__ == "__main__":
    unittest.main()
