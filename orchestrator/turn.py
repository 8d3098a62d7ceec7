"""One reply attempt: its identity, lifecycle, timeline and trace, and the reply as it was spoken."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from orchestrator.audio import BYTES_PER_SAMPLE
from orchestrator.timing import Mark, Outcome, Timeline, TurnResult, span_figures, turn_result
from orchestrator.tracing import TurnTrace
from voice.llm.v1 import llm_pb2
from voice.tts.v1 import tts_pb2


@dataclass
class Unit:
    """A sentence/clause of the reply as the TTS spoke it, located in the reply's audio."""

    text: str
    offset: int  # first sample within the reply's audio
    samples: int = 0
    complete: bool = False


def heard_text(units: list[Unit], played_samples: int) -> str:
    """Units fully played, plus the played fraction of the current unit's words."""
    parts: list[str] = []
    for unit in units:
        if played_samples >= unit.offset + unit.samples and unit.complete:
            parts.append(unit.text.strip())
            continue
        if played_samples > unit.offset and unit.samples:
            words = unit.text.split()
            fraction = min(1.0, (played_samples - unit.offset) / unit.samples)
            heard_words = int(fraction * len(words))
            if heard_words:
                parts.append(" ".join(words[:heard_words]))
        break
    return " ".join(p for p in parts if p)


@dataclass
class SpokenReply:
    """The reply as generated (text deltas, the LLM's summary) and as the TTS spoke it (units)."""

    parts: list[str] = field(default_factory=list)
    summary: llm_pb2.GenerationSummary | None = None
    units: list[Unit] = field(default_factory=list)
    received_samples: int = 0
    sample_rate_hz: int = 0  # of the audio received
    _by_key: dict[tuple[int, int, int], Unit] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def add_audio(self, chunk: tts_pb2.SynthesizeResponse) -> None:
        """Locate a TTS audio chunk in the reply: a new (sentence, span) key starts a new unit."""
        samples = len(chunk.audio) // BYTES_PER_SAMPLE
        self.sample_rate_hz = chunk.sample_rate_hz or self.sample_rate_hz
        key = (chunk.sentence_index, chunk.text_start_char, chunk.text_end_char)
        unit = self._by_key.get(key)
        if unit is None:
            self.audio_ended()
            unit = self._by_key[key] = Unit(text=chunk.text, offset=self.received_samples)
            self.units.append(unit)
        unit.samples += samples
        unit.complete = unit.complete or chunk.sentence_end
        self.received_samples += samples

    def audio_ended(self) -> None:
        """No more audio for the last unit (a next one started, or the stream ended)."""
        if self.units:
            self.units[-1].complete = True

    def heard(self, played_samples: int) -> str:
        return heard_text(self.units, played_samples)


class Turn:
    """One reply attempt: to a FINAL, or speculative (held) on a CANDIDATE_FINAL until confirmed."""

    def __init__(
        self,
        seq: int,
        transcript: str,
        utterance_index: int,
        *,
        speculative: bool,
        prev: Turn | None,
        offset_ms: int,
        trace: TurnTrace,
    ) -> None:
        self.seq = seq
        self.transcript = transcript
        self.utterance_index = utterance_index
        self.speculative = speculative
        self.turn_id = f"{seq}-{uuid.uuid4().hex[:8]}"  # GenerateRequest.turn_id: DiscardTurn removes it
        self.prev = prev  # the turn before: its reply goes into the LLM history (and is played) first
        self.offset_ms = offset_ms  # where this turn's STT stream starts in the run's audio
        self.trace = trace
        self.timeline = Timeline()
        self.timeline.observers.append(lambda mark, t, attrs: trace.mark(mark.value, t, attrs))
        self.task: asyncio.Task[None] | None = None
        self.calls: dict[str, Any] = {}  # the turn's LLM/TTS calls by kind, cancelled together
        self.confirmed = asyncio.Event()  # the reply may be played
        self.llm_done = asyncio.Event()  # the Generate call is over (or will never run)
        self.done = asyncio.Event()  # the turn is over: played, barged in or discarded
        self.spoken = SpokenReply()
        self.final_event: Any = None  # the STT FINAL of this turn (sync mode recognizes its audio)
        self.sample_rate_hz = 0  # of the reply's audio, once it plays
        self.audio = b""  # the reply's audio as played
        self.heard: str | None = None
        self.barge_in = False
        self.preemptive_used = False
        self.cancelled_rpcs: list[str] = []
        # Speculative replies: where the LLM's end-of-turn probability goes (the STT's endpoint hint).
        self.on_end_of_turn: Callable[[float], None] | None = None
        self.end_of_turn_probability: float | None = None

    @property
    def playing(self) -> bool:
        return Mark.PLAYBACK_START in self.timeline

    def mark(
        self, mark: Mark, t: float | None = None, attributes: dict[str, Any] | None = None, *, again: bool = False
    ) -> None:
        self.timeline.mark(mark, t, attributes, again=again)

    def cancel_calls(self) -> list[str]:
        """Cancel the turn's calls still running; returns their kinds."""
        cancelled = []
        for kind, call in self.calls.items():
            if not call.done():
                call.cancel()
                cancelled.append(kind)
        return cancelled

    async def stop_task(self) -> None:
        task = self.task
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def finish(self, mode: str, session_id: str) -> TurnResult:
        """The turn is over (played or stopped): its result, its spans ended, every waiter released."""
        result = turn_result(self.timeline.at, self.outcome(mode, session_id))
        end = self.timeline.at.get(Mark.END)
        self.trace.finished(span_figures(result), audio_s=result.audio_s, barge_in=result.barge_in, t_end=end)
        self.done.set()
        self.llm_done.set()
        return result

    def fail(self, error: BaseException) -> None:
        """The turn failed (or its run ended under it): its calls cancelled, its spans ended with the error."""
        self.cancel_calls()
        self.trace.failed(error)
        self.done.set()

    def outcome(self, mode: str, session_id: str) -> Outcome:
        summary = self.spoken.summary
        return Outcome(
            mode=mode,
            session_id=session_id,
            trace_id=self.trace.trace_id,
            transcript=self.transcript,
            utterance_index=self.utterance_index,
            streamed_reply=self.spoken.text,
            final_text=summary.text if summary is not None else "",
            heard=self.heard,
            barge_in=self.barge_in,
            preemptive_used=self.preemptive_used,
            audio=self.audio,
            sample_rate_hz=self.sample_rate_hz,
            prompt_tokens=summary.prompt_tokens if summary else 0,
            cached_prompt_tokens=summary.cached_prompt_tokens if summary else 0,
            completion_tokens=summary.completion_tokens if summary else 0,
            cancelled_rpcs=tuple(self.cancelled_rpcs),
            endpoint_silence_ms=int(getattr(self.final_event, "endpoint_silence_ms", 0) or 0),
            end_of_turn_probability=self.end_of_turn_probability,
        )
