"""Kokoro-82M through mlx-audio (Apple Silicon; the mlx extra)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tts_service.engine import Backend, VoiceInfo


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
