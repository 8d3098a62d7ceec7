"""The first-phrase check's measurements on synthetic audio and transcripts (no models)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from bench.first_phrase_check import agent_replies
from bench.speech_measure import (
    edge_silence_s,
    f0_hz,
    frame_levels,
    inner_pauses,
    mark_after,
    pause_near,
    pitch_fall_st,
    silent,
)

RATE = 16_000


def tone(seconds: float, hz: float = 120.0, amplitude: float = 8000.0) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    # a strong second harmonic, as in a voice: the pitch must still read as the fundamental
    return amplitude * (np.sin(2 * np.pi * hz * t) + 0.8 * np.sin(4 * np.pi * hz * t))


def gap(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE))


def mask_of(audio: np.ndarray) -> np.ndarray:
    levels = frame_levels(audio, RATE)
    return silent(levels, float(levels.max()))


def test_edges_and_pauses_of_speech_with_one_pause() -> None:
    mask = mask_of(np.concatenate([gap(0.1), tone(0.3), gap(0.2), tone(0.3), gap(0.05)]))
    lead, trail = edge_silence_s(mask)
    assert lead == pytest.approx(0.1)
    assert trail == pytest.approx(0.05)
    (start, end), *more = inner_pauses(mask)
    assert not more
    assert (start, end) == (pytest.approx(0.4), pytest.approx(0.6))
    assert pause_near([(start, end)], 0.5) == pytest.approx(0.2)
    assert pause_near([(start, end)], 0.2) == 0.0  # ±150 ms around 0.2 s does not reach the pause


def test_silence_is_relative_to_the_loudest_frame() -> None:
    quiet_40db, quiet_30db = tone(0.2, amplitude=80.0), tone(0.2, amplitude=8000 * 10 ** (-30 / 20))
    assert inner_pauses(mask_of(np.concatenate([tone(0.2), quiet_40db, tone(0.2)]))) == [
        (pytest.approx(0.2), pytest.approx(0.4))
    ]
    assert inner_pauses(mask_of(np.concatenate([tone(0.2), quiet_30db, tone(0.2)]))) == []
    all_silent = np.ones(10, dtype=bool)
    assert edge_silence_s(all_silent) == (pytest.approx(0.1), 0.0)
    assert inner_pauses(all_silent) == []


def test_pitch_reads_the_fundamental_and_not_noise() -> None:
    assert f0_hz(tone(0.04, 110.0), RATE) == pytest.approx(110.0, rel=0.03)
    assert f0_hz(np.random.default_rng(1).normal(0, 3000, int(0.04 * RATE)), RATE) is None


def test_pitch_fall_over_the_last_200_ms() -> None:
    falling = np.concatenate([tone(0.8, 120.0), tone(0.2, 100.0)])
    assert pitch_fall_st(falling, RATE, 0.0, 1.0) == pytest.approx(12 * math.log2(100 / 120), abs=0.3)
    assert pitch_fall_st(tone(1.0, 120.0), RATE, 0.0, 1.0) == pytest.approx(0.0, abs=0.2)
    assert pitch_fall_st(gap(1.0), RATE, 0.0, 1.0) is None


def test_punctuation_heard_at_the_cut() -> None:
    reference = "Today's weather is mild with a moderate wind."
    assert mark_after("today's weather is mild, with the moderate wind.", reference, 4) is True
    assert mark_after("Today's weather is mild with a moderate wind.", reference, 4) is False
    assert mark_after("Today's weather was mild, with a moderate wind.", reference, 4) is None  # other words
    spoken = "Set a timer for ten minutes."
    assert mark_after("Set a timer for 10, minutes.", spoken, 5) is True  # digits count as the words spoken
    assert mark_after("Set a timer for 10 minutes.", spoken, 5) is False


def test_agent_replies_are_the_streaming_replies_once(tmp_path: Path) -> None:
    turns = [
        {"mode": "streaming", "reply": "The capital is Canberra."},
        {"mode": "sync", "reply": "Only in sync mode."},
        {"mode": "streaming", "reply": " The capital is Canberra. "},
        {"mode": "streaming", "reply": ""},
        {"mode": "streaming", "reply": "Hi Anna!"},
    ]
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"turns": turns}), encoding="utf-8")
    assert agent_replies(results) == ["The capital is Canberra.", "Hi Anna!"]
