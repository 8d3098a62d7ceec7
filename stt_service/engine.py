"""The speech-engine interface (no gRPC, no backend here): the backend enum, options, results, the protocol.

A leaf module: the backends (`ct2_engine.py`, `mlx_engine.py`) import it, and `backends.py`
picks one. An engine decodes ONE window of 16 kHz float32 audio (at most `MAX_WINDOW_S`); callers split
longer audio at VAD pauses (see `clip.py` and `recognizer.py`). Engines are not thread-safe:
the service drives each engine from a single worker thread (`service_runtime.worker.ModelWorker`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

SAMPLE_RATE = 16_000
# Whisper sees 30 s per window; keep a margin for the padding around speech.
MAX_WINDOW_S = 28.0


class Backend(str, enum.Enum):
    FASTER_WHISPER = "faster-whisper"  # CTranslate2 int8 on CPU (default on Linux)
    MLX = "mlx"  # mlx-whisper (default on macOS arm64 when installed)

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Segment:
    text: str
    start_s: float
    end_s: float


@dataclass(frozen=True)
class Transcript:
    text: str
    segments: list[Segment] = field(default_factory=list)
    decode_ms: float = 0.0
    # Evidence used to drop hallucinations (reported for logs and tests).
    no_speech_prob: float = 0.0
    avg_logprob: float = 0.0
    # The decoded text token ids, before the text filter (faster-whisper; empty where a backend has none).
    tokens: tuple[int, ...] = ()


@dataclass(frozen=True)
class DecodeOptions:
    beam_size: int = 1
    # Drop the text when the model thinks there is no speech AND is unsure of its words
    # (Whisper's own rule), or when it is very unsure whatever it thinks.
    no_speech_threshold: float = 0.6
    logprob_threshold: float = -1.0
    min_logprob: float = -2.0
    # Shortest encoder window. The encoder cost scales with the window (30 s -> 6 s: ~4x
    # faster); below ~6 s tiny.en garbles more; loops are cut (measured on the fixtures, README).
    min_window_s: float = 6.0
    # False = always encode a full 30 s window like stock Whisper (for comparison).
    short_window: bool = True
    # Decoder length cap: speech is ~3-4 tokens/s; a cap stops repetition loops early.
    max_tokens_per_s: float = 7.0


class UnsupportedLanguage(ValueError):
    pass


class SpeechEngine(Protocol):
    backend: Backend
    model_name: str
    model_path: str

    def transcribe(self, audio: np.ndarray, language: str = "") -> Transcript:
        """Text of one window (<= MAX_WINDOW_S) of 16 kHz mono float32 audio."""
        ...

    def check_language(self, language: str) -> str:
        """Normalized language code the model will use, or UnsupportedLanguage."""
        ...

    def describe(self) -> dict[str, object]:
        """What to print at start-up."""
        ...
