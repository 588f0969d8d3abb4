import io
import json
import struct
import unittest

from qvl_worker.framing import FrameDecoder, FramingError, encode, read_message


def raw_frame(json_bytes, payload=b""):
    return struct.pack(">I", len(json_bytes)) + json_bytes + payload


class FramingTest(unittest.TestCase):
    def test_round_trip_with_payload(self):
        payload = bytes(range(256)) * 10
        frame = encode({"type": "generate", "id": "r1", "header": {"x": "é中"}}, payload)
        self.assertEqual(struct.unpack(">I", frame[:4])[0], len(frame) - 4 - len(payload))
        msgs = FrameDecoder().feed(frame)
        self.assertEqual(len(msgs), 1)
        self.assertEqual(msgs[0].type, "generate")
        self.assertEqual(msgs[0].body["payload_bytes"], len(payload))
        self.assertEqual(msgs[0].body["header"], {"x": "é中"})
        self.assertEqual(msgs[0].payload, payload)

    def test_no_payload_means_no_payload_bytes(self):
        frame = encode({"type": "cancel", "id": "r1", "payload_bytes": 99})
        (msg,) = FrameDecoder().feed(frame)
        self.assertNotIn("payload_bytes", msg.body)
        self.assertEqual(msg.payload, b"")

    def test_partial_reads_byte_by_byte(self):
        frames = encode({"type": "a"}, b"xyz") + encode({"type": "b"}) + encode({"type": "c"}, b"\x00" * 1000)
        dec = FrameDecoder()
        got = []
        for i in range(len(frames)):
            got += dec.feed(frames[i : i + 1])
        self.assertEqual([m.type for m in got], ["a", "b", "c"])
        self.assertEqual(got[0].payload, b"xyz")
        self.assertEqual(len(got[2].payload), 1000)
        dec.check_eof()

    def test_several_messages_in_one_chunk(self):
        chunk = b"".join(encode({"type": "t", "n": i}) for i in range(5))
        self.assertEqual([m.body["n"] for m in FrameDecoder().feed(chunk)], list(range(5)))

    def test_read_message_blocking_and_clean_eof(self):
        stream = io.BytesIO(encode({"type": "a"}, b"12") + encode({"type": "b"}))
        self.assertEqual(read_message(stream).payload, b"12")
        self.assertEqual(read_message(stream).type, "b")
        self.assertIsNone(read_message(stream))

    def test_oversize_json_refused_before_reading_it(self):
        dec = FrameDecoder(max_json_bytes=100)
        with self.assertRaises(FramingError) as cm:
            dec.feed(struct.pack(">I", 101))
        self.assertEqual(cm.exception.code, "json_too_large")
        with self.assertRaises(FramingError) as cm:
            read_message(io.BytesIO(struct.pack(">I", 0xFFFFFFFF)), max_json_bytes=100)
        self.assertEqual(cm.exception.code, "json_too_large")

    def test_oversize_payload_refused_before_reading_it(self):
        frame = raw_frame(json.dumps({"type": "generate", "payload_bytes": 10_000}).encode())
        with self.assertRaises(FramingError) as cm:
            FrameDecoder(max_payload_bytes=9_999).feed(frame)
        self.assertEqual(cm.exception.code, "payload_too_large")
        with self.assertRaises(FramingError) as cm:
            read_message(io.BytesIO(frame), max_payload_bytes=9_999)
        self.assertEqual(cm.exception.code, "payload_too_large")

    def test_encode_refuses_oversize_json(self):
        with self.assertRaises(FramingError) as cm:
            encode({"type": "x", "blob": "a" * 200}, max_json_bytes=100)
        self.assertEqual(cm.exception.code, "json_too_large")

    def test_malformed_messages(self):
        cases = {
            b"{not json": "invalid_json",
            b"\xff\xfe": "invalid_json",
            b"[1,2]": "invalid_message",
            b'{"id":"x"}': "invalid_message",
            b'{"type":3}': "invalid_message",
            b'{"type":"a","payload_bytes":-1}': "invalid_message",
            b'{"type":"a","payload_bytes":1.5}': "invalid_message",
            b'{"type":"a","payload_bytes":true}': "invalid_message",
        }
        for data, code in cases.items():
            with self.subTest(data=data):
                with self.assertRaises(FramingError) as cm:
                    FrameDecoder().feed(raw_frame(data))
                self.assertEqual(cm.exception.code, code)

    def test_truncated_streams(self):
        frame = encode({"type": "a"}, b"payload")
        for cut in (2, 6, len(frame) - 3):
            with self.subTest(cut=cut):
                dec = FrameDecoder()
                self.assertEqual(dec.feed(frame[:cut]), [])
                with self.assertRaises(FramingError) as cm:
                    dec.check_eof()
                self.assertEqual(cm.exception.code, "truncated")
                with self.assertRaises(FramingError):
                    read_message(io.BytesIO(frame[:cut]))


if __name__ == "__main__":
    unittest.main()
