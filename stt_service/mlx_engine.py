"""mlx-whisper backend (Apple Silicon; `pip install .[mlx]`). Imported lazily: never on Linux by default."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from stt_service.engine import SAMPLE_RATE, Backend, DecodeOptions, Segment, Transcript, UnsupportedLanguage
from stt_service.text_filter import accept

DEFAULT_MLX_MODEL = "mlx-community/whisper-large-v3-turbo"


class MlxWhisperEngine:
    backend = Backend.MLX

    def __init__(self, model: str = "", options: DecodeOptions | None = None) -> None:
        try:
            import mlx.core as mx
            import mlx_whisper
        except ImportError as error:  # pragma: no cover - depends on the extra
            raise RuntimeError("the mlx backend needs the mlx extra: pip install '.[mlx]'") from error
        self.options = options or DecodeOptions()
        self._mlx_whisper = mlx_whisper
        self.model_path = str(Path(model).resolve()) if model and Path(model).is_dir() else (model or DEFAULT_MLX_MODEL)
        self.model_name = Path(self.model_path).name
        # fp16 only on a GPU (Metal); the CPU build computes in float32.
        self.fp16 = mx.default_device() == mx.gpu
        config = Path(self.model_path) / "config.json"
        self.multilingual = True
        if config.is_file():
            import json

            self.multilingual = int(json.loads(config.read_text()).get("n_vocab", 51865)) >= 51865

    def check_language(self, language: str) -> str:
        lang = (language or "").strip().lower().replace("_", "-").split("-")[0]
        if not self.multilingual and lang not in ("", "en"):
            raise UnsupportedLanguage(
                f"language {language!r} is not supported by the English-only model {self.model_name}"
            )
        return lang or "en"

    def transcribe(self, audio: np.ndarray, language: str = "") -> Transcript:
        started = time.perf_counter()
        language = self.check_language(language)
        audio = np.asarray(audio, dtype=np.float32)
        result: dict[str, Any] = self._mlx_whisper.transcribe(
            audio,
            path_or_hf_repo=self.model_path,
            language=language,
            fp16=self.fp16,
            temperature=0.0,
            condition_on_previous_text=False,
            without_timestamps=True,
            verbose=None,
        )
        duration_s = len(audio) / SAMPLE_RATE
        segments: list[Segment] = []
        worst_no_speech, logprobs = 0.0, []
        for seg in result.get("segments", []):
            no_speech = float(seg.get("no_speech_prob", 0.0))
            logprob = float(seg.get("avg_logprob", 0.0))
            text = accept(str(seg.get("text", "")), no_speech, logprob, duration_s, self.options)
            worst_no_speech = max(worst_no_speech, no_speech)
            logprobs.append(logprob)
            if text:
                segments.append(Segment(text, float(seg.get("start", 0.0)), float(seg.get("end", duration_s))))
        text = " ".join(s.text for s in segments)
        elapsed_ms = (time.perf_counter() - started) * 1000
        avg = float(np.mean(logprobs)) if logprobs else 0.0
        return Transcript(text, segments, elapsed_ms, worst_no_speech, avg)

    def describe(self) -> dict[str, object]:
        return {"backend": self.backend.value, "model": self.model_name, "path": self.model_path, "fp16": self.fp16}
