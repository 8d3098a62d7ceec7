"""Pure measurements on rendered speech for bench.first_phrase_check (numpy only, no models).

Silence: 10 ms frames whose RMS is below SILENCE_DB of the loudest frame. Pitch: F0 of 40 ms
frames by unbiased autocorrelation (60-300 Hz), frames more than 1.6x off the median dropped
as octave errors. Transcript punctuation at a word position, as a sign of a heard boundary.
"""

from __future__ import annotations

import math
from statistics import median

import numpy as np

from bench.stats import normalize_words

FRAME_S = 0.01
SILENCE_DB = -35.0
NEAR_S = 0.15
TAIL_S = 0.2


def frame_levels(audio: np.ndarray, rate: int) -> np.ndarray:
    """RMS of each FRAME_S frame."""
    n = int(rate * FRAME_S)
    x = audio[: len(audio) // n * n].astype(np.float64).reshape(-1, n)
    return np.sqrt(np.mean(x**2, axis=1))


def silent(levels: np.ndarray, loudest: float, db: float = SILENCE_DB) -> np.ndarray:
    return levels < loudest * 10 ** (db / 20)


def edge_silence_s(mask: np.ndarray) -> tuple[float, float]:
    """(leading, trailing) silence in seconds of a silent-frame mask."""
    voiced = np.flatnonzero(~mask)
    if not voiced.size:
        return len(mask) * FRAME_S, 0.0
    return voiced[0] * FRAME_S, (len(mask) - 1 - voiced[-1]) * FRAME_S


def inner_pauses(mask: np.ndarray) -> list[tuple[float, float]]:
    """(start_s, end_s) of the silent runs between the first and the last voiced frame."""
    voiced = np.flatnonzero(~mask)
    if not voiced.size:
        return []
    gaps = np.flatnonzero(np.diff(voiced) > 1)
    return [((voiced[g] + 1) * FRAME_S, voiced[g + 1] * FRAME_S) for g in gaps]


def pause_near(pauses: list[tuple[float, float]], t: float, within: float = NEAR_S) -> float:
    """Longest pause overlapping [t - within, t + within]; 0 if none."""
    return max((end - start for start, end in pauses if start <= t + within and end >= t - within), default=0.0)


def f0_hz(frame: np.ndarray, rate: int, low: float = 60.0, high: float = 300.0) -> float | None:
    """Pitch of a short frame by (unbiased) autocorrelation; None when it is not clearly periodic."""
    x = frame.astype(np.float64) - float(np.mean(frame))
    ac = np.correlate(x, x, "full")[len(x) - 1 :] / np.arange(len(x), 0, -1)
    lo, hi = int(rate / high), min(int(rate / low), len(x) // 2)
    if ac[0] <= 0 or hi <= lo:
        return None
    lag = lo + int(np.argmax(ac[lo:hi]))
    return rate / lag if ac[lag] > 0.5 * ac[0] else None


def pitch_fall_st(audio: np.ndarray, rate: int, start_s: float, end_s: float) -> float | None:
    """Semitones from the median F0 of [start_s, end_s) to the median F0 of its last TAIL_S (None if unvoiced).

    Octave errors (frames more than 1.6x off the median) are dropped."""
    win, hop = int(0.04 * rate), int(0.01 * rate)
    track = []
    for i in range(int(start_s * rate), int(end_s * rate) - win + 1, hop):
        f0 = f0_hz(audio[i : i + win], rate)
        if f0:
            track.append((i / rate, f0))
    if len(track) < 5:
        return None
    mid = median(f for _, f in track)
    track = [(t, f) for t, f in track if mid / 1.6 < f < mid * 1.6]
    tail = [f for t, f in track if t + 0.04 >= end_s - TAIL_S]
    if len(tail) < 3:
        return None
    return round(12 * math.log2(median(tail) / median(f for _, f in track)), 2)


def mark_after(heard: str, reference: str, k: int) -> bool | None:
    """Did the transcript put punctuation after its k-th word? None unless its first k words are the reference's."""
    ref, count = normalize_words(reference), 0  # reference: as the TTS speaks it
    for token in heard.split():
        count += len(normalize_words(token))
        if count >= k:
            if count != k or normalize_words(heard)[:k] != ref[:k]:
                return None
            return token[-1] in ",;:.!?"
    return None
