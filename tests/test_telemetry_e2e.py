"""One OpenTelemetry trace per turn across all four processes (real services, real orchestrator CLI).

An in-test OTLP/gRPC collector stands in for Jaeger; the session's shared services (tests/conftest.py)
and `python -m orchestrator talk` export to it through OTEL_EXPORTER_OTLP_ENDPOINT exactly as they
would to Jaeger.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import AUDIO, FIXTURES, ROOT
from tests.otlp_collector import CollectedSpan, OtlpCollector
from tests.stack import Stack
from tests.wer import wer

pytestmark = pytest.mark.real

FIXTURE = "timer.wav"
SERVICES = {"orchestrator", "stt-service", "llm-service", "tts-service"}


def talk(stack: Stack, tmp: Path, env: dict[str, str]) -> list[dict[str, Any]]:
    """`python -m orchestrator talk` on one spoken question; its JSON turn records. Not paced: the
    trace's shape, attributes and order are checked, not how long the turn takes in real time."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [
            *(sys.executable, "-m", "orchestrator", "talk", "--quiet", "--no-pace", "--max-tokens", "24"),
            *("--input", str(AUDIO / FIXTURE), "--output", str(tmp / "reply.wav"), "--json", str(tmp / "turns.jsonl")),
            *("--stt-address", stack.address("stt"), "--llm-address", stack.address("llm")),
            *("--tts-address", stack.address("tts")),
        ],
        env={**clean, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return [json.loads(line) for line in (tmp / "turns.jsonl").read_text().splitlines() if line.strip()]


def tree(spans: list[CollectedSpan]) -> str:
    """The trace as an indented tree with start offsets and durations (ms), for the test log."""
    by_parent: dict[str, list[CollectedSpan]] = {}
    for s in spans:
        by_parent.setdefault(s.parent_span_id, []).append(s)
    t0 = min(s.start_ns for s in spans)
    lines: list[str] = []

    def walk(parent: str, depth: int) -> None:
        for s in sorted(by_parent.get(parent, []), key=lambda x: x.start_ns):
            lines.append(
                f"{'  ' * depth}{s.name} [{s.service_name}] +{(s.start_ns - t0) / 1e6:.0f} ms "
                f"{(s.end_ns - s.start_ns) / 1e6:.0f} ms {s.events}"
            )
            walk(s.span_id, depth + 1)

    walk("", 0)
    return "\n".join(lines)


def test_one_turn_is_one_trace_across_the_four_processes(
    stack: Stack, collector: OtlpCollector, tmp_path: Path
) -> None:
    received_before = len(collector.spans)
    (record,) = talk(stack, tmp_path, {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint})
    assert wer(FIXTURES[FIXTURE]["text"], record["transcript"]) < 0.4 and record["reply"].strip(), record
    trace_id = record["trace_id"]
    wanted = {"turn", "playback", "stt.recognize", "llm.generate", "tts.synthesize", "tts.sentence"}

    def complete(got: list[CollectedSpan]) -> bool:
        mine = [s for s in got if s.trace_id == trace_id]
        # A span is exported when it ends, in batches: the confirmed attempt's LLM and TTS calls
        # end last (after their sentences, after a discarded attempt's cancelled calls).
        confirmed = {s.name for s in mine if "cancelled" not in s.events}
        return wanted <= {s.name for s in mine} and {"llm.generate", "tts.synthesize"} <= confirmed

    collector.wait_for(complete, timeout_s=30)
    spans = [s for s in collector.spans if s.trace_id == trace_id]
    print(f"\ntrace {trace_id}\n{tree(spans)}")
    assert {s.service_name for s in spans} == SERVICES
    # Exactly one trace holds this turn: no other `turn` root and no turn work elsewhere.
    turns = [s for s in collector.spans[received_before:] if s.name == "turn"]
    assert [s.trace_id for s in turns] == [trace_id], "one `turn` trace per turn, and no empty ones"
    (root,) = [s for s in spans if s.name == "turn"]
    assert root.service_name == "orchestrator" and root.parent_span_id == ""
    by_id = {s.span_id: s for s in spans}

    def under(span: CollectedSpan, ancestor: CollectedSpan) -> bool:
        parent = by_id.get(span.parent_span_id)
        while parent is not None:
            if parent.span_id == ancestor.span_id:
                return True
            parent = by_id.get(parent.parent_span_id)
        return False

    def one(name: str, service: str) -> CollectedSpan:
        found = [s for s in spans if s.name == name and s.service_name == service]
        assert len(found) >= 1, (name, service)
        return found[-1]

    stt = one("stt.recognize", "stt-service")
    assert stt.parent_span_id == root.span_id, "the turn's own STT stream is a child of the turn"
    # The confirmed attempt's calls (a discarded speculative attempt may add cancelled ones).
    llm = [s for s in spans if s.name == "llm.generate" and "cancelled" not in s.events][-1]
    tts = [s for s in spans if s.name == "tts.synthesize" and "cancelled" not in s.events][-1]
    for span in (llm, tts):
        assert under(span, root), span
    playback = one("playback", "orchestrator")
    assert playback.parent_span_id == root.span_id
    sentences = [s for s in spans if s.name == "tts.sentence" and s.parent_span_id == tts.span_id]
    assert sentences and all(s.service_name == "tts-service" for s in sentences)

    # Attributes the issue lists, and key moments as events.
    for key in ("dead_air_ms", "total_ms", "mode", "session_id", "transcript_chars", "reply_chars", "barge_in"):
        assert key in root.attributes, key
    for name in ("speech_end", "stt_final", "first_token", "first_audio"):
        assert name in root.events, (name, root.events)
    for key in ("audio_s", "rtf", "speech_start_ms", "speech_end_ms", "endpoint_silence_ms", "final_latency_ms"):
        assert key in stt.attributes, (key, stt.attributes)
    assert {"speech_start", "endpoint", "final"} <= set(stt.events)
    for key in ("prompt_tokens", "completion_tokens", "ttft_ms"):
        assert key in llm.attributes, (key, llm.attributes)
    assert "first_token" in llm.events
    assert "first_audio" in tts.events and "ttfa_ms" in tts.attributes
    for s in sentences:
        assert {"ttfa_ms", "audio_s"} <= set(s.attributes), s.attributes
    assert "audio_s" in playback.attributes and "first_audio" in playback.events

    # The root's figures are the JSON report's, and consistent with the other spans.
    assert abs(root.attributes["dead_air_ms"] - record["dead_air_ms"]) <= 1.0
    assert abs(root.attributes["total_ms"] - record["total_ms"]) <= 1.0
    assert root.attributes["transcript_chars"] == len(record["transcript"])
    assert root.attributes["reply_chars"] == len(record["reply"])
    assert root.attributes["session_id"] == record["session_id"]
    assert llm.attributes["ttft_ms"] <= (llm.end_ns - llm.start_ns) / 1e6 + 1
    assert llm.attributes["ttft_ms"] <= record["total_ms"] + (stt.end_ns - stt.start_ns) / 1e6
    assert llm.attributes["completion_tokens"] == record["completion_tokens"]
    for child in (stt, llm, tts, playback):
        assert root.start_ns <= child.start_ns and child.end_ns <= root.end_ns + 5_000_000, child.name
    # Dead air ends when playback starts: the playback span starts then (the root ends `total_ms`
    # after the end of speech). Not before it (1 ms for rounding); how much later the span's own
    # start is taken depends on the machine's load, so only the order is asserted.
    speech_end_ns = root.end_ns - record["total_ms"] * 1e6
    dead_air_end_ns = speech_end_ns + record["dead_air_ms"] * 1e6
    assert dead_air_end_ns - 1e6 <= playback.start_ns <= root.end_ns, (dead_air_end_ns, playback.start_ns)
