"""What a Whisper decode may keep: annotations stripped, hallucinations on non-speech dropped.

Shared by the backends (no model, no gRPC here).
"""

from __future__ import annotations

import re

from stt_service.engine import DecodeOptions

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
