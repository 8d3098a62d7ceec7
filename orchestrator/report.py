"""The per-turn latency waterfall printed after each turn, and the Jaeger link (when spans are exported)."""

from __future__ import annotations

import os

from orchestrator.timing import TurnResult
from service_runtime import telemetry

BAR_MS_PER_CHAR = 100
BAR_MAX = 50


def jaeger_link(trace_id: str) -> str:
    base = os.environ.get("JAEGER_UI_URL", "http://localhost:16686").rstrip("/")
    return f"{base}/trace/{trace_id}"


EXPORT_HINT = "set OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4317 (Jaeger: `make jaeger`) to export it"


def trace_line(trace_id: str, exported: bool) -> str:
    """Where to see the turn's trace: a Jaeger link when spans are exported, else how to export them."""
    if not trace_id.strip("0"):  # no tracer provider: a no-op span
        return "trace not recorded (this process set up no tracer provider: telemetry.setup_tracing)"
    if exported:
        return f"trace {trace_id}  {jaeger_link(trace_id)}"
    return f"trace {trace_id} not exported: {EXPORT_HINT}"


def _fmt(ms: float | None) -> str:
    return "      -" if ms is None else f"{ms:7.0f}"


def _bar(ms: float | None) -> str:
    if ms is None or ms <= 0:
        return ""
    return "█" * max(1, min(BAR_MAX, round(ms / BAR_MS_PER_CHAR)))


def waterfall(result: TurnResult, index: int | None = None, *, exported: bool | None = None) -> str:
    """A multi-line latency table: every step in ms from the end of the user's speech.

    `exported`: whether this process exports its spans (default: OTEL_EXPORTER_OTLP_ENDPOINT is set).
    """
    flags = [result.mode]
    if result.preemptive_used:
        flags.append("preemptive")
    if result.barge_in:
        flags.append("barge-in")
    title = f"turn {index}" if index is not None else "turn"
    lines = [f"── {title} ({', '.join(flags)}) ── latency from end of speech, ms"]
    rows = [
        ("end of speech", 0.0),
        ("STT final", result.stt_final_ms),
        ("first token", result.llm_ttft_ms),
        ("first sentence", result.first_sentence_ms),
        ("first audio", result.tts_ttfa_ms),
        ("playback start", result.playback_start_ms),
    ]
    for label, ms in rows:
        lines.append(f"  {label:<15}{_fmt(ms)}  {_bar(ms)}")
    lines.append(f"  {'DEAD AIR':<15}{_fmt(result.dead_air_ms)}")
    end_label = "stopped (barge-in)" if result.barge_in else "end of reply"
    lines.append(f"  {'total':<15}{_fmt(result.total_ms)}  ({end_label}, {result.audio_s:.1f} s of audio played)")
    lines.append("  " + trace_line(result.trace_id, telemetry.exporting() if exported is None else exported))
    return "\n".join(lines)
