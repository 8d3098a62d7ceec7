"""SocketSink: what the user heard at a barge-in, from the page's `played` reports (a fake clock); the turn event."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from orchestrator import TurnResult
from orchestrator.web.adapter import turn_event
from orchestrator.web.playout import Outgoing, SocketSink

RATE = 16_000


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def sink_with_one_second_sent() -> tuple[SocketSink, Clock, asyncio.Queue[Outgoing]]:
    clock = Clock()
    out: asyncio.Queue[Outgoing] = asyncio.Queue()
    sink = SocketSink(out, clock=clock)
    sink.begin(RATE)
    sink.write(bytes(2 * RATE))  # one second of reply, sent at once
    return sink, clock, out


def test_without_reports_the_wall_clock_from_the_send_counts() -> None:
    sink, clock, _out = sink_with_one_second_sent()
    clock.t += 0.5
    assert sink.played_samples() == RATE // 2


def test_the_pages_report_carried_forward_in_real_time_wins_when_it_lags() -> None:
    sink, clock, _out = sink_with_one_second_sent()
    clock.t += 0.5
    sink.report_played(1, 4000)  # the page is 4000 samples (250 ms) behind the send
    clock.t += 0.1
    assert sink.played_samples() == 4000 + RATE // 10
    assert sink.stop() == 4000 + RATE // 10, "barge-in: heard = what the page played"


def test_a_report_never_claims_more_than_was_sent_and_a_stale_reply_is_ignored() -> None:
    sink, clock, out = sink_with_one_second_sent()
    clock.t += 0.5
    sink.report_played(1, 15_000)  # more than the wall clock allows: capped
    assert sink.played_samples() == RATE // 2
    sink.end()
    sink.begin(RATE)  # reply 2
    sink.write(bytes(2 * RATE))
    sink.report_played(1, 0)  # a late report about reply 1
    clock.t += 0.25
    assert sink.played_samples() == RATE // 4
    events = [out.get_nowait() for _ in range(out.qsize())]
    starts = [e for e in events if isinstance(e, dict) and e["type"] == "audio_start"]
    assert [s["reply"] for s in starts] == [1, 2]


def test_the_turn_event_links_the_trace_only_when_spans_are_exported(monkeypatch: pytest.MonkeyPatch) -> None:
    result = TurnResult(
        mode="streaming", transcript="hi", reply="Hello.", heard_reply="Hello.", dead_air_ms=812.34,
        stt_final_ms=300.0, llm_ttft_ms=500.0, first_sentence_ms=600.0, tts_ttfa_ms=812.34,
        playback_start_ms=812.34, total_ms=2000.0, barge_in=False, preemptive_used=True,
        trace_id="ab" * 16, session_id="conv-1", audio=b"", sample_rate_hz=22050,
    )  # fmt: skip
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    quiet = turn_event(result, 1, 9600)
    assert quiet["trace_id"] == "ab" * 16 and quiet["trace_url"] is None
    assert quiet["waterfall"][-1] == {"key": "dead_air_ms", "label": "dead air", "ms": 812.3}
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://localhost:4317")
    monkeypatch.setenv("JAEGER_UI_URL", "http://jaeger.lan:16686/")
    assert turn_event(result, 1, 9600)["trace_url"] == f"http://jaeger.lan:16686/trace/{'ab' * 16}"
    untraced = turn_event(replace(result, trace_id="0" * 32), 1, None)  # no tracer provider: a no-op span
    assert untraced["trace_id"] is None and untraced["trace_url"] is None
