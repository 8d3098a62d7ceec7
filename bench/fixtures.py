"""The spoken test clips (tests/fixtures/audio: espeak-ng, plus real human recordings of kind "human",
see tests/fixtures/audio/PROVENANCE.md) used as user turns."""

from __future__ import annotations

import json
import wave
from dataclasses import dataclass
from pathlib import Path

FIXTURE_DIR = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "audio"
# The longest clip the bench speaks: the espeak-ng turns are 2-7 s, the human recordings up to ~11 s
# (JFK's one sentence with its long pauses).
MAX_TURN_MS = 12_000


@dataclass(frozen=True)
class Utterance:
    name: str
    text: str
    pcm: bytes  # signed 16-bit little-endian mono
    sample_rate_hz: int
    speech_end_ms: int
    pause_ms: int
    duration_ms: int
    kind: str


def read_wav(path: Path) -> tuple[bytes, int]:
    with wave.open(str(path), "rb") as wav:
        if wav.getnchannels() != 1 or wav.getsampwidth() != 2:
            raise ValueError(f"{path}: expected 16-bit mono, got {wav.getnchannels()} ch x {wav.getsampwidth()} B")
        return wav.readframes(wav.getnframes()), wav.getframerate()


def load_utterances(
    directory: Path = FIXTURE_DIR, min_ms: int = 2000, max_ms: int = 6000, names: list[str] | None = None
) -> list[Utterance]:
    """Single-utterance clips of min_ms..max_ms with a known transcript (no silence/noise/two-utterance clips)."""
    meta_path = directory / "transcripts.json"
    if not meta_path.exists():
        raise FileNotFoundError(f"{meta_path} missing: run tests/fixtures/make_fixtures.py")
    entries = json.loads(meta_path.read_text())
    out: list[Utterance] = []
    for entry in entries:
        name = Path(entry["file"]).stem
        if names and name not in names:
            continue
        if not entry.get("text") or entry.get("utterances"):
            continue
        if not min_ms <= int(entry["duration_ms"]) <= max_ms:
            continue
        pcm, rate = read_wav(directory / entry["file"])
        out.append(
            Utterance(
                name=name,
                text=entry["text"],
                pcm=pcm,
                sample_rate_hz=rate,
                speech_end_ms=int(entry["speech_end_ms"]),
                pause_ms=int(entry.get("pause_ms", 0)),
                duration_ms=int(entry["duration_ms"]),
                kind=str(entry.get("kind", "")),
            )
        )
    return out
