"""AWS eventstream frames (`application/vnd.amazon.eventstream`), encoded as Bedrock sends them.

    frame = total length (u32) | headers length (u32) | CRC32 of those 8 bytes
            | headers | payload | CRC32 of everything before it
    header = name length (u8) | name | type 7 (string) | value length (u16) | value

The gateway decodes with botocore's parser; this encoder exists only for the fakes.
"""

from __future__ import annotations

import struct
import zlib

import orjson


def frame(headers: dict[str, str], payload: bytes) -> bytes:
    encoded = b"".join(struct.pack(">B", len(name)) + name.encode() + b"\x07" + struct.pack(">H", len(value.encode()))
                       + value.encode() for name, value in headers.items())
    total = 12 + len(encoded) + len(payload) + 4
    prelude = struct.pack(">II", total, len(encoded))
    head = prelude + struct.pack(">I", zlib.crc32(prelude)) + encoded + payload
    return head + struct.pack(">I", zlib.crc32(head))


def event(event_type: str, body: dict) -> bytes:
    return frame({":event-type": event_type, ":content-type": "application/json", ":message-type": "event"},
                 orjson.dumps(body))


def exception(exception_type: str, message: str) -> bytes:
    return frame({":exception-type": exception_type, ":content-type": "application/json",
                  ":message-type": "exception"}, orjson.dumps({"message": message}))


def encode(frames: list[dict]) -> bytes:
    """A cassette's `frames`: each {"event": type, "body": {...}} or {"exception": type, "message": text}."""
    out = []
    for item in frames:
        if "event" in item:
            out.append(event(item["event"], item["body"]))
        else:
            out.append(exception(item["exception"], item["message"]))
    return b"".join(out)
