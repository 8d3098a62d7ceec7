"""Picks and builds the TTS voices: the one place that knows every backend."""

from __future__ import annotations

import platform
import sys
from collections.abc import Sequence
from pathlib import Path

from tts_service.engine import Backend, LoadedVoice, TtsEngine, VoiceModel
from tts_service.kokoro_voice import MlxKokoroVoiceModel
from tts_service.piper_voice import PiperVoiceModel, default_piper_voice


def default_backend() -> Backend:
    """mlx on macOS arm64 when mlx_audio is importable, else piper."""
    if sys.platform == "darwin" and platform.machine() == "arm64":
        try:
            import mlx_audio  # noqa: F401

            return Backend.MLX
        except ImportError:
            pass
    return Backend.PIPER


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
