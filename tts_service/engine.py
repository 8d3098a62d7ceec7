"""The TTS engine interface (no gRPC, no backend here): the voice protocol, results, and the
engine that keeps the resident voices.

A leaf module: the backends (`piper_voice.py`, `kokoro_voice.py`) implement `VoiceModel`, and
`backends.py` builds them. Each voice owns a model worker (one thread), so one model instance
is never driven by two threads at once; streams share it sentence by sentence (fair
interleaving, bounded latency).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

import numpy as np
import soxr

from service_runtime.worker import ModelWorker
from tts_service.text_cleaning import clean_text

log = logging.getLogger("tts-service")

MIN_OUTPUT_RATE = 8000
MAX_OUTPUT_RATE = 48000
WARM_UP_TEXT = "Hello, this is a warm up."
# Any voice speaks WARM_UP_TEXT (7 syllables) in about 1-3 s; outside this, the model is broken.
WARM_UP_SECONDS = (0.4, 8.0)


class EngineCheckError(RuntimeError):
    """The start-up warm-up produced no usable audio."""


def check_warm_up_audio(voice: str, pcm: bytes, sample_rate_hz: int) -> None:
    """Raise EngineCheckError unless `pcm` sounds like speech: plausible length, not silent, not clipped noise."""
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
    seconds = samples.size / sample_rate_hz if sample_rate_hz else 0.0
    rms = float(np.sqrt(np.mean(samples**2))) if samples.size else 0.0
    low, high = WARM_UP_SECONDS
    if not (low <= seconds <= high and 0.005 <= rms <= 0.5):
        raise EngineCheckError(
            f"voice {voice!r} spoke {WARM_UP_TEXT!r} as {seconds:.2f} s of audio at RMS {rms:.3f} "
            f"(expected {low}-{high} s, RMS 0.005-0.5): the voice model or the ONNX/MLX runtime is broken"
        )


class Backend(str, Enum):
    PIPER = "piper"
    MLX = "mlx"

    def __str__(self) -> str:
        return self.value


class TtsError(Exception):
    """Bad request detected by the engine (mapped to INVALID_ARGUMENT by the servicer)."""


@dataclass(frozen=True)
class VoiceInfo:
    name: str
    language: str  # e.g. "en_US"
    sample_rate_hz: int
    backend: Backend
    path: str


class VoiceModel(Protocol):
    """A loaded voice. `synthesize` is blocking and called from one thread at a time."""

    info: VoiceInfo

    def synthesize(self, text: str) -> np.ndarray:
        """Cleaned text → int16 mono PCM at info.sample_rate_hz."""
        ...


@dataclass(frozen=True)
class SynthesisResult:
    spoken_text: str  # text after cleaning ("" → no audio)
    pcm: bytes  # s16le mono at the requested rate
    sample_rate_hz: int
    synth_s: float  # wall time of the model call

    @property
    def audio_s(self) -> float:
        return len(self.pcm) / 2 / self.sample_rate_hz if self.sample_rate_hz else 0.0


KEEP_PAUSE_MS = 60  # silence kept after a segment whose sentence goes on (a short breath)


def trim_trailing_silence(pcm: np.ndarray, sample_rate_hz: int, keep_ms: int = KEEP_PAUSE_MS) -> np.ndarray:
    """`pcm` without its trailing silence beyond `keep_ms` (silence: below -40 dB of the peak)."""
    if not pcm.size:
        return pcm
    level = np.abs(pcm.astype(np.float32))
    loud = np.flatnonzero(level > 0.01 * level.max())
    if not loud.size:
        return pcm
    return pcm[: min(len(pcm), int(loud[-1]) + 1 + keep_ms * sample_rate_hz // 1000)]


class LoadedVoice:
    """A resident voice with its single synthesis worker."""

    def __init__(self, model: VoiceModel) -> None:
        self.model = model
        self.info = model.info
        self.worker = ModelWorker(f"tts-{model.info.name}")

    def _synthesize_now(self, text: str, sample_rate_hz: int, continues: bool = False) -> SynthesisResult:
        """On the worker thread. `continues`: the text is the start of a sentence that goes on."""
        spoken = clean_text(text, self.info.language)
        rate = sample_rate_hz or self.info.sample_rate_hz
        if not spoken:
            return SynthesisResult("", b"", rate, 0.0)
        started = time.perf_counter()
        pcm = self.model.synthesize(spoken)
        if continues:
            # The rest of the sentence follows: no sentence-end silence after this part. (Voicing it
            # as a clause with an added comma was tried: its pitch fell more, bench/RESULTS.md.)
            pcm = trim_trailing_silence(pcm, self.info.sample_rate_hz)
        if rate != self.info.sample_rate_hz and pcm.size:
            pcm = soxr.resample(pcm, self.info.sample_rate_hz, rate, quality="HQ")
        return SynthesisResult(spoken, pcm.astype("<i2").tobytes(), rate, time.perf_counter() - started)

    def synthesize_blocking(self, text: str, sample_rate_hz: int = 0, continues: bool = False) -> SynthesisResult:
        """From a thread that is not the event loop (the warm-up, measurements): waits for the worker."""
        return self.worker.run_sync(lambda: self._synthesize_now(text, sample_rate_hz, continues))

    async def synthesize(self, text: str, sample_rate_hz: int = 0, continues: bool = False) -> SynthesisResult:
        """Queue on this voice's worker. Cancelling before the worker picks it up skips it."""
        return await self.worker.run(lambda: self._synthesize_now(text, sample_rate_hz, continues))

    def close(self) -> None:
        self.worker.close(timeout_s=0)  # queued sentences are dropped; a running one finishes on its own


class TtsEngine:
    def __init__(self, voices: Sequence[LoadedVoice], backend: Backend, threads: int) -> None:
        if not voices:
            raise ValueError("at least one voice is needed")
        self.voices = {v.info.name: v for v in voices}
        self.default = voices[0]
        self.backend = backend
        self.threads = threads

    def voice(self, name: str) -> LoadedVoice:
        if not name:
            return self.default
        try:
            return self.voices[name]
        except KeyError:
            raise TtsError(f"unknown voice {name!r}; installed voices: {', '.join(self.voices)}") from None

    @staticmethod
    def check_rate(sample_rate_hz: int) -> None:
        if sample_rate_hz and not MIN_OUTPUT_RATE <= sample_rate_hz <= MAX_OUTPUT_RATE:
            raise TtsError(
                f"sample_rate_hz {sample_rate_hz} is not supported; use 0 (the voice's native rate) "
                f"or {MIN_OUTPUT_RATE} to {MAX_OUTPUT_RATE}"
            )

    def warm_up(self) -> float:
        """One synthesis per voice (first ONNX run allocates); returns the seconds it took."""
        started = time.perf_counter()
        for name, voice in self.voices.items():
            result = voice.synthesize_blocking(WARM_UP_TEXT)
            check_warm_up_audio(name, result.pcm, result.sample_rate_hz)
        return time.perf_counter() - started

    def close(self) -> None:
        for voice in self.voices.values():
            voice.close()
