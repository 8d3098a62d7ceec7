"""The WebSocket protocol's limits and the parsing of client messages (schema: docs/WEB.md).

Binary messages carry audio (up: exactly one 20 ms frame of 16 kHz mono s16le; down: s16le at
the rate announced by `audio_start`); text messages are JSON objects with a `type`. Anything
else is a ProtocolError whose close code and reason the server sends before closing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

PROTOCOL_VERSION = 1
SAMPLE_RATE_HZ = 16_000
FRAME_MS = 20
FRAME_BYTES = SAMPLE_RATE_HZ * 2 * FRAME_MS // 1000  # 640
MAX_TEXT_BYTES = 4096
# aiohttp refuses (close 1009) any message above this before it is buffered whole.
MAX_MESSAGE_BYTES = 64 * 1024
# Frames may arrive in bursts after a network stall: a token bucket of this many seconds of audio.
BURST_S = 2.0
START_TIMEOUT_S = 10.0
MAX_PLAYED_PER_S = 20

# WebSocket close codes (RFC 6455 §7.4.1).
CLOSE_NORMAL = 1000
CLOSE_UNSUPPORTED = 1003  # audio format other than 16 kHz mono s16le, audio before `start`
CLOSE_INVALID = 1007  # malformed JSON, wrong frame size
CLOSE_POLICY = 1008  # faster than real time, unknown message type
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL = 1011  # a service failed or is down
CLOSE_TRY_LATER = 1013  # session limit


class ProtocolError(Exception):
    """A client broke the protocol: `code` is the close code, `error` the `error` event's code."""

    def __init__(self, close_code: int, error: str, message: str) -> None:
        super().__init__(message)
        self.close_code = close_code
        self.error = error
        self.message = message


@dataclass(frozen=True)
class Start:
    """The first message of a session: the audio format the client sends, and its options."""

    barge_in: bool = True


def parse_text(text: str) -> dict[str, Any]:
    """A client JSON message as a dict with a known `type`, or ProtocolError."""
    if len(text.encode("utf-8")) > MAX_TEXT_BYTES:
        raise ProtocolError(CLOSE_TOO_BIG, "too_big", f"text message over {MAX_TEXT_BYTES} bytes")
    try:
        message = json.loads(text)
    except ValueError as error:
        raise ProtocolError(CLOSE_INVALID, "bad_json", f"malformed JSON: {error}") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ProtocolError(CLOSE_INVALID, "bad_message", 'a message must be a JSON object with a string "type"')
    if message["type"] not in ("start", "stop", "played"):
        raise ProtocolError(CLOSE_POLICY, "unknown_type", f"unknown message type {message['type']!r}")
    return message


def parse_start(message: dict[str, Any]) -> Start:
    """Check a `start` message: 16 kHz mono s16le in 20 ms frames only."""
    expected = {"sample_rate_hz": SAMPLE_RATE_HZ, "channels": 1, "encoding": "s16le", "frame_ms": FRAME_MS}
    for key, value in expected.items():
        got = message.get(key, value)
        if got != value:
            raise ProtocolError(
                CLOSE_UNSUPPORTED,
                "bad_format",
                f"{key}={got!r} is not supported: send {SAMPLE_RATE_HZ} Hz mono s16le in {FRAME_MS} ms frames",
            )
    barge_in = message.get("barge_in", True)
    if not isinstance(barge_in, bool):
        raise ProtocolError(CLOSE_INVALID, "bad_message", "barge_in must be true or false")
    return Start(barge_in=barge_in)


def check_frame(data: bytes) -> None:
    if len(data) != FRAME_BYTES:
        raise ProtocolError(
            CLOSE_INVALID,
            "bad_frame",
            f"audio frame of {len(data)} bytes: each must be {FRAME_BYTES} bytes ({FRAME_MS} ms of {SAMPLE_RATE_HZ} Hz s16le)",
        )


class RateLimit:
    """Token bucket: `per_s` messages a second on average, bursts of up to `burst`."""

    def __init__(self, now: float, per_s: float, burst: float, what: str) -> None:
        self.per_s = per_s
        self.capacity = burst
        self.tokens = burst
        self.last = now
        self.what = what

    def take(self, now: float) -> None:
        self.tokens = min(self.capacity, self.tokens + (now - self.last) * self.per_s)
        self.last = now
        if self.tokens < 1.0:
            raise ProtocolError(CLOSE_POLICY, "too_fast", self.what)
        self.tokens -= 1.0


def frame_rate(now: float) -> RateLimit:
    """Real-time audio (one frame per FRAME_MS) with bursts of up to BURST_S."""
    per_s = 1000.0 / FRAME_MS
    return RateLimit(
        now, per_s, BURST_S * per_s, f"audio arrives faster than real time (one {FRAME_MS} ms frame per {FRAME_MS} ms)"
    )


def played_rate(now: float) -> RateLimit:
    return RateLimit(
        now, MAX_PLAYED_PER_S, 2 * MAX_PLAYED_PER_S, f"played reports arrive faster than {MAX_PLAYED_PER_S} a second"
    )


def parse_played(message: dict[str, Any]) -> tuple[int, int]:
    """A `played` report: (reply number, samples of it that left the page's speaker)."""
    reply, samples = message.get("reply"), message.get("samples")
    for name, value in (("reply", reply), ("samples", samples)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ProtocolError(CLOSE_INVALID, "bad_message", f"played.{name} must be an integer >= 0, not {value!r}")
    return reply, samples  # type: ignore[return-value]


def close_reason(text: str) -> bytes:
    """A close reason within the 123 bytes RFC 6455 allows."""
    data = text.encode("utf-8")
    if len(data) <= 123:
        return data
    return data[:120].decode("utf-8", "ignore").encode("utf-8") + b"..."
