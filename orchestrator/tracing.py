"""All of the orchestrator's spans: one trace per conversational turn.

Listening for a turn opens the root span `turn` (a new trace); its STT stream and every LLM/TTS
call of the turn carry that span's context (`metadata()`). A speculative reply attempt is a child
span `speculative` ending `confirmed=true` or `discarded=true`; once confirmed, the attempt's
figures go on the root. Playback is a child span `playback`. Listening that heard no turn ends as
root `listen` with `empty=true`. The library never installs a tracer provider (entry points do,
with `service_runtime.telemetry.setup_tracing`); without one every span is a no-op.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span, TracerProvider

from service_runtime import telemetry

TRACER_NAME = "orchestrator"
# Marks of a turn's timeline that are events on its span (the others have spans of their own).
SPAN_EVENTS = ("speech_end", "stt_final", "first_token", "first_sentence", "first_audio")


def wall_ns(perf_t: float) -> int:
    """A perf_counter time as epoch ns (span timestamps)."""
    return time.time_ns() - int((time.perf_counter() - perf_t) * 1e9)


def turn_tracer(provider: TracerProvider | None = None) -> trace.Tracer:
    """The tracer of `provider`, else of the process's provider (a no-op one until an entry point sets it)."""
    return trace.get_tracer(TRACER_NAME, tracer_provider=provider)


def start_listening(tracer: trace.Tracer, mode: str, session_id: str) -> Span:
    """The root span of the next turn (a new trace), opened when listening for it starts."""
    return tracer.start_span(
        "turn",
        context=trace.set_span_in_context(trace.INVALID_SPAN),
        attributes={"mode": mode, "session_id": session_id},
    )


def end_unanswered(root: Span) -> None:
    """Listening that heard no turn (silence, noise, the end of the input): not a `turn` trace."""
    if root.is_recording():
        root.update_name("listen")
        root.set_attribute("empty", True)
        root.end()


def metadata(span: Span) -> list[tuple[str, str]]:
    """gRPC metadata carrying `span`'s W3C trace context."""
    return telemetry.outgoing_metadata(span)


class TurnTrace:
    """The spans of one reply attempt in its turn's trace.

    `span` is where the attempt's events and calls go: its own `speculative` span while held,
    the turn's root once confirmed (or from the start for a reply to a FINAL).
    """

    def __init__(
        self, tracer: trace.Tracer, root: Span, *, speculative: bool, transcript: str, utterance_index: int
    ) -> None:
        self._tracer = tracer
        self.root = root
        self.span = root
        self._speculative: Span | None = None
        self._playback: Span | None = None
        if speculative:
            self._speculative = self.span = tracer.start_span(
                "speculative",
                context=trace.set_span_in_context(root),
                attributes={"transcript_chars": len(transcript), "utterance_index": utterance_index},
            )

    @property
    def trace_id(self) -> str:
        return format(self.root.get_span_context().trace_id, "032x")

    def metadata(self) -> list[tuple[str, str]]:
        return metadata(self.span)

    def mark(self, name: str, t: float, attributes: Mapping[str, Any] | None = None) -> None:
        """A timeline mark (`speech_end`, `first_token`, ...) at perf_counter time `t`."""
        if name in SPAN_EVENTS:
            self.span.add_event(name, attributes, timestamp=wall_ns(t))

    def event(self, name: str, attributes: Mapping[str, Any] | None = None) -> None:
        self.span.add_event(name, attributes)

    def confirm(self, marks: Mapping[str, float]) -> None:
        """The FINAL confirmed the attempt: from now on its figures go on the root.

        The speculative span stays open until the turn ends (its LLM/TTS calls are its children);
        `marks` that happened while held are replayed on the root at their times.
        """
        self.span.set_attribute("confirmed", True)
        self.span = self.root
        for name, t in marks.items():
            self.mark(name, t)

    def playback_started(self) -> None:
        self._playback = self._tracer.start_span("playback", context=trace.set_span_in_context(self.span))
        self._playback.add_event("first_audio")

    def barge_in(self, played_samples: int, heard: str, cancelled: list[str]) -> None:
        if self._playback is not None:
            self._playback.add_event("barge_in", {"played_samples": played_samples, "heard_chars": len(heard)})
        self.span.add_event("barge_in", {"heard": heard, "cancelled": ",".join(cancelled)})

    def discarded(self, cancelled: list[str]) -> None:
        """A speculative attempt thrown away: its span ends marked `discarded`."""
        self.span.set_attribute("discarded", True)
        self.span.add_event("cancelled", {"rpcs": ",".join(cancelled)})
        self.span.end()

    def failed(self, error: BaseException) -> None:
        self.span.record_exception(error)
        self.span.set_status(trace.Status(trace.StatusCode.ERROR, type(error).__name__))
        self._end_children()
        self.span.end()

    def finished(self, figures: Mapping[str, Any], *, audio_s: float, barge_in: bool, t_end: float | None) -> None:
        """The turn is over: its figures (None values skipped) on the span, then every span ends."""
        for key, value in figures.items():
            if value is not None:
                self.span.set_attribute(key, round(value, 1) if isinstance(value, float) else value)
        end_time = wall_ns(t_end) if t_end else None
        if self._playback is not None:
            self._playback.set_attribute("audio_s", round(audio_s, 3))
            if barge_in:
                self._playback.add_event("cancelled")
        self._end_children(end_time)
        self.span.end(end_time=end_time)

    def _end_children(self, end_time: int | None = None) -> None:
        if self._playback is not None:
            self._playback.end(end_time=end_time)
        if self._speculative is not None and self._speculative is not self.span:
            self._speculative.end()
