"""Start-up self-check: the speech engine must hear a known phrase before the service is SERVING.

A broken build or model file (wrong architecture, corrupt weights, a CPU path that computes
nonsense) shows up here as an exception naming the cause instead of a service that answers
every user with silence or garbage. It doubles as the warm-up: the first decode and VAD pass
allocate their buffers here, not on the first user's turn.
"""

from __future__ import annotations

import re
import wave
from pathlib import Path

import numpy as np

from stt_service.engine import SAMPLE_RATE, SpeechEngine
from stt_service.vad import SileroVad

CHECK_CLIP = Path(__file__).with_name("warmup_speech.wav")
CHECK_TEXT = "Set a timer for ten minutes, please."
MIN_WORDS_HEARD = 0.5  # of CHECK_TEXT's words; tiny.en gets all of them


class SelfCheckError(RuntimeError):
    pass


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


def load_check_clip() -> np.ndarray:
    with wave.open(str(CHECK_CLIP), "rb") as wav:
        assert wav.getframerate() == SAMPLE_RATE and wav.getnchannels() == 1 and wav.getsampwidth() == 2
        pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    return pcm.astype(np.float32) / 32768.0


def check_engine(engine: SpeechEngine, vad: SileroVad) -> str:
    """Run the VAD and one real decode on the bundled phrase; return the text, or raise SelfCheckError."""
    audio = load_check_clip()
    speech = vad.probabilities(audio)
    if not np.isfinite(speech).all() or speech.max() < 0.5:
        raise SelfCheckError(
            f"the VAD found no speech in the self-check clip {CHECK_CLIP.name} (max p={speech.max():.2f})"
        )
    text = engine.transcribe(audio, "").text
    expected = _words(CHECK_TEXT)
    heard = set(_words(text))
    share = sum(word in heard for word in expected) / len(expected)
    if share < MIN_WORDS_HEARD:
        raise SelfCheckError(
            f"the speech engine transcribed the self-check phrase {CHECK_TEXT!r} as {text!r} "
            f"({share:.0%} of its words): the model or the CTranslate2/MLX build is broken on this machine"
        )
    return text
