"""Silero VAD (faster-whisper's bundled ONNX model) run frame by frame with per-session state.

One ONNX session is shared (onnxruntime sessions are thread-safe for `run`); each stream has
its own `VadStream` (LSTM state h/c, the 64-sample context and the sub-frame remainder).
A frame is 512 samples at 16 kHz (32 ms); ~0.1 ms of CPU each.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

FRAME = 512
CONTEXT = 64
FRAME_MS = 32


def bundled_vad_path() -> str:
    from faster_whisper.utils import get_assets_path

    return os.path.join(get_assets_path(), "silero_vad_v6.onnx")


class SileroVad:
    def __init__(self, path: str | None = None) -> None:
        import onnxruntime

        self.path = path or bundled_vad_path()
        opts = onnxruntime.SessionOptions()
        opts.inter_op_num_threads = 1
        opts.intra_op_num_threads = 1
        opts.log_severity_level = 4
        self._session = onnxruntime.InferenceSession(self.path, providers=["CPUExecutionProvider"], sess_options=opts)

    def stream(self) -> VadStream:
        return VadStream(self)

    def run(self, frames: np.ndarray, h: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """frames: [n, CONTEXT + FRAME] float32 (consecutive frames, a sequence)."""
        probs, h, c = self._session.run(None, {"input": frames, "h": h, "c": c})
        return np.asarray(probs, dtype=np.float32).reshape(-1), h, c

    def probabilities(self, audio: np.ndarray) -> np.ndarray:
        """Speech probability per 32 ms frame of a whole clip (the tail shorter than a frame is dropped)."""
        return self.stream().push(audio)


class VadStream:
    """Per-session VAD state: feed any number of samples, get one probability per full frame."""

    def __init__(self, vad: SileroVad) -> None:
        self._vad = vad
        self._h = np.zeros((1, 1, 128), dtype=np.float32)
        self._c = np.zeros((1, 1, 128), dtype=np.float32)
        self._context = np.zeros(CONTEXT, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)

    def push(self, samples: np.ndarray) -> np.ndarray:
        audio = np.concatenate([self._pending, np.asarray(samples, dtype=np.float32)])
        n = len(audio) // FRAME
        self._pending = audio[n * FRAME :]
        if n == 0:
            return np.zeros(0, dtype=np.float32)
        frames = audio[: n * FRAME].reshape(n, FRAME)
        contexts = np.concatenate([self._context[None], frames[:-1, -CONTEXT:]], axis=0)
        self._context = frames[-1, -CONTEXT:].copy()
        probs, self._h, self._c = self._vad.run(np.concatenate([contexts, frames], axis=1), self._h, self._c)
        return probs


@dataclass(frozen=True)
class Region:
    start: int  # samples
    end: int


def speech_regions(
    probs: np.ndarray,
    threshold: float = 0.5,
    neg_threshold: float = 0.35,
    min_silence_frames: int = 4,
    min_speech_frames: int = 2,
) -> list[Region]:
    """Speech regions (in samples) from frame probabilities, with hysteresis."""
    regions: list[Region] = []
    start: int | None = None
    last_voiced = -1
    for i, p in enumerate(probs):
        if start is None:
            if p >= threshold:
                start, last_voiced = i, i
        elif p >= neg_threshold:
            last_voiced = i
        elif i - last_voiced >= min_silence_frames:
            if last_voiced - start + 1 >= min_speech_frames:
                regions.append(Region(start * FRAME, (last_voiced + 1) * FRAME))
            start = None
    if start is not None and last_voiced - start + 1 >= min_speech_frames:
        regions.append(Region(start * FRAME, (last_voiced + 1) * FRAME))
    return regions
