"""Turn timing, observer style: the reply's parts mark moments on a `Timeline`; `turn_result()`
turns the marks and the turn's outcome into a `TurnResult` (a pure function).

Every figure is ms from the end of the user's speech (`speech_end`). Observers (the turn's trace)
see each mark as it happens.
"""

from __future__ import annotations

import enum
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from orchestrator.audio import BYTES_PER_SAMPLE


class Mark(str, enum.Enum):
    SPEECH_END = "speech_end"  # the user's last speech sample (send clock)
    STT_FINAL = "stt_final"  # the FINAL that made it a turn (sync: Recognize's answer)
    FIRST_TOKEN = "first_token"
    FIRST_SENTENCE = "first_sentence"  # the reply's first sentence end (or the whole reply)
    LLM_DONE = "llm_done"
    FIRST_AUDIO = "first_audio"  # the first TTS audio received (a held reply: before the FINAL)
    PLAYBACK_START = "playback_start"  # the first audio sample handed to the sink: dead air ends
    END = "end"  # the reply played to its end, or stopped by barge-in


Observer = Callable[[Mark, float, Mapping[str, Any] | None], None]
# Marks a held (speculative) reply may reach before the FINAL confirms it.
HELD_MARKS = (Mark.FIRST_TOKEN, Mark.FIRST_SENTENCE, Mark.FIRST_AUDIO)


class Timeline:
    """When each mark of one turn happened (perf_counter seconds); the first time wins unless `again`."""

    def __init__(self) -> None:
        self.at: dict[Mark, float] = {}
        self.observers: list[Observer] = []

    def mark(
        self, mark: Mark, t: float | None = None, attributes: Mapping[str, Any] | None = None, *, again: bool = False
    ) -> None:
        if mark in self.at and not again:
            return
        self.at[mark] = time.perf_counter() if t is None else t
        for observer in self.observers:
            observer(mark, self.at[mark], attributes)

    def __contains__(self, mark: Mark) -> bool:
        return mark in self.at

    def held(self) -> dict[str, float]:
        """The marks a held reply reached so far, by name."""
        return {m.value: self.at[m] for m in HELD_MARKS if m in self.at}


@dataclass(frozen=True)
class Outcome:
    """What a turn produced, apart from its timeline."""

    mode: str
    session_id: str
    trace_id: str
    transcript: str
    utterance_index: int
    streamed_reply: str  # the text deltas as received
    final_text: str = ""  # the LLM's GenerationSummary.text ("" when none)
    heard: str | None = None  # what the user heard of a barged-in reply
    barge_in: bool = False
    preemptive_used: bool = False
    audio: bytes = b""
    sample_rate_hz: int = 0
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    completion_tokens: int = 0
    cancelled_rpcs: tuple[str, ...] = ()
    endpoint_silence_ms: int = 0  # the FINAL's endpoint silence (0: stream closed, or sync mode)
    end_of_turn_probability: float | None = None  # the LLM's score of the transcript, when asked


@dataclass
class TurnResult:
    """One turn, its latency waterfall (ms from the end of the user's speech) and the reply audio."""

    mode: str
    transcript: str
    reply: str
    heard_reply: str
    dead_air_ms: float | None
    stt_final_ms: float | None
    llm_ttft_ms: float | None
    first_sentence_ms: float | None
    tts_ttfa_ms: float | None
    playback_start_ms: float | None
    total_ms: float | None
    barge_in: bool
    preemptive_used: bool
    trace_id: str
    session_id: str
    audio: bytes = field(repr=False)
    sample_rate_hz: int
    utterance_index: int = 0
    audio_s: float = 0.0
    llm_done_ms: float | None = None
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    completion_tokens: int = 0
    cancelled_rpcs: list[str] = field(default_factory=list)
    endpoint_silence_ms: int = 0
    end_of_turn_probability: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """Everything but the audio, JSON-ready."""
        record = asdict(self)
        record.pop("audio")
        return {k: (round(v, 1) if isinstance(v, float) else v) for k, v in record.items()}

    def to_json(self) -> str:
        """The JSON-lines record of this turn (one line, no audio)."""
        return json.dumps(self.as_dict(), ensure_ascii=False)


def turn_result(at: Mapping[Mark, float], outcome: Outcome) -> TurnResult:
    """The TurnResult of a turn whose marks happened at `at` (perf_counter seconds)."""
    base = at.get(Mark.SPEECH_END, 0.0)

    def ms(mark: Mark) -> float | None:
        t = at.get(mark)
        return None if t is None else (t - base) * 1000.0

    # A barged-in reply is what was generated; else the LLM's own final text when it sent one.
    reply = outcome.final_text if outcome.final_text and not outcome.barge_in else outcome.streamed_reply
    rate = outcome.sample_rate_hz
    return TurnResult(
        mode=outcome.mode,
        transcript=outcome.transcript,
        reply=reply,
        heard_reply=outcome.heard if outcome.heard is not None else reply,
        dead_air_ms=ms(Mark.PLAYBACK_START),
        stt_final_ms=ms(Mark.STT_FINAL),
        llm_ttft_ms=ms(Mark.FIRST_TOKEN),
        first_sentence_ms=ms(Mark.FIRST_SENTENCE),
        tts_ttfa_ms=ms(Mark.FIRST_AUDIO),
        playback_start_ms=ms(Mark.PLAYBACK_START),
        total_ms=ms(Mark.END),
        barge_in=outcome.barge_in,
        preemptive_used=outcome.preemptive_used,
        trace_id=outcome.trace_id,
        session_id=outcome.session_id,
        audio=outcome.audio,
        sample_rate_hz=rate,
        utterance_index=outcome.utterance_index,
        audio_s=len(outcome.audio) / BYTES_PER_SAMPLE / rate if rate else 0.0,
        llm_done_ms=ms(Mark.LLM_DONE),
        prompt_tokens=outcome.prompt_tokens,
        cached_prompt_tokens=outcome.cached_prompt_tokens,
        completion_tokens=outcome.completion_tokens,
        cancelled_rpcs=list(outcome.cancelled_rpcs),
        endpoint_silence_ms=outcome.endpoint_silence_ms,
        end_of_turn_probability=outcome.end_of_turn_probability,
    )


def span_figures(result: TurnResult) -> dict[str, Any]:
    """The figures a turn's root span carries."""
    figures: dict[str, Any] = {
        key: getattr(result, key) for key in ("dead_air_ms", "total_ms", "stt_final_ms", "llm_ttft_ms", "tts_ttfa_ms")
    }
    figures.update(
        transcript_chars=len(result.transcript),
        reply_chars=len(result.reply),
        barge_in=result.barge_in,
        preemptive_used=result.preemptive_used,
    )
    return figures
