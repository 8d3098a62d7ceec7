"""Plain helpers shared by the test modules (fixtures proper live in tests/conftest.py):
the spoken fixtures, request shorthands, bounded waits on live counters, grpcurl."""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import sys
import threading
import time
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

from voice.llm.v1 import llm_pb2
from voice.stt.v1 import stt_pb2

ROOT = Path(__file__).resolve().parent.parent
AUDIO = Path(__file__).parent / "fixtures" / "audio"
FIXTURES: dict[str, dict[str, Any]] = {f["file"]: f for f in json.loads((AUDIO / "transcripts.json").read_text())}
QUESTIONS = [f for f in FIXTURES.values() if f["kind"] in ("question", "paused")]
GRPCURL = str(Path(sys.executable).parent / "grpcurl")

GREEDY = llm_pb2.SamplingOptions(temperature=0.0, seed=7)
STT16K = stt_pb2.RecognitionConfig(sample_rate_hz=16000)


def pcm(name: str) -> bytes:
    """16 kHz mono s16le samples of a spoken fixture."""
    with wave.open(str(AUDIO / name)) as w:
        assert w.getframerate() == 16000 and w.getnchannels() == 1 and w.getsampwidth() == 2
        return w.readframes(w.getnframes())


def speech(name: str) -> bytes:
    """The voiced part of a fixture (its leading and trailing silence cut off)."""
    item = FIXTURES[name]
    return pcm(name)[item["speech_start_ms"] * 32 : item["speech_end_ms"] * 32]


def silence_ms(ms: int) -> bytes:
    return b"\x00\x00" * (16 * ms)


def user(text: str) -> llm_pb2.ChatMessage:
    return llm_pb2.ChatMessage(role="user", content=text)


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z']+", text.lower()))


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> float:
    """Seconds until `predicate()` holds; each try is one RPC round trip, bounded by a deadline."""
    started = time.monotonic()
    pause = threading.Event()  # never set: a short bounded pause between polls, not synchronisation
    while not predicate():
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"{what} did not happen within {timeout_s:.1f}s")
        pause.wait(0.005)
    return time.monotonic() - started


def grpcurl(*args: str, stdin: str | None = None, timeout_s: float = 60.0) -> str:
    done = subprocess.run(
        [GRPCURL, "-plaintext", *args], input=stdin, capture_output=True, text=True, timeout=timeout_s
    )
    assert done.returncode == 0, f"grpcurl {' '.join(args[:3])} failed: {done.stderr}"
    return done.stdout


def json_stream(text: str) -> list[dict[str, Any]]:
    """The JSON objects grpcurl prints one after the other for a streaming reply."""
    decoder = json.JSONDecoder()
    out, text = [], text.strip()
    while text:
        obj, end = decoder.raw_decode(text)
        out.append(obj)
        text = text[end:].strip()
    return out


def traced() -> tuple[str, list[tuple[str, str]]]:
    """A fresh trace id and the gRPC metadata that makes a call part of that trace: the server's
    spans for the call can then be picked out of the collector by trace id."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, [("traceparent", f"00-{trace_id}-{span_id}-01")]
