"""What one turn measured: `TurnResult`, its latency waterfall (ms from the end of the user's speech)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any


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

    def as_dict(self) -> dict[str, Any]:
        """Everything but the audio, JSON-ready."""
        record = asdict(self)
        record.pop("audio")
        return {k: (round(v, 1) if isinstance(v, float) else v) for k, v in record.items()}

    def to_json(self) -> str:
        """The JSON-lines record of this turn (one line, no audio)."""
        return json.dumps(self.as_dict(), ensure_ascii=False)
