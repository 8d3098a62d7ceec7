"""Whole-clip recognition (unary Recognize) and request validation, without gRPC.

A clip is split by the VAD into speech regions; regions closer than `MERGE_GAP_S` are decoded
together (one segment), never more than the model window. Non-speech is never decoded, so
silence and noise give "" without asking the model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import numpy as np
import soxr

from stt_service.endpointing import EndpointConfig
from stt_service.engine import MAX_WINDOW_S, SAMPLE_RATE, Segment, SpeechEngine, Transcript
from stt_service.vad import FRAME, Region, SileroVad, speech_regions

MIN_RATE, MAX_RATE = 8_000, 48_000
ENCODING_UNSPECIFIED, ENCODING_LINEAR16 = 0, 1
MIN_SILENCE_MS, MAX_SILENCE_MS = 100, 5_000
# A candidate is speculative (only a FINAL ends the turn), so it may come as soon as the VAD can see
# a pause at all: one 32 ms frame.
MIN_CANDIDATE_SILENCE_MS = FRAME * 1000 // SAMPLE_RATE
MERGE_GAP_S = 1.0
MAX_HINT_TEXT = 4000
PAD_S = 0.2


class InvalidRequest(ValueError):
    """Bad client input; the message names what was wrong and what is allowed."""


@dataclass(frozen=True)
class ConfigFields:
    """The RecognitionConfig fields (plain values, so this module does not import the protos).

    Each field is named like its proto field: `from_message` copies them by name.
    """

    sample_rate_hz: int
    encoding: int
    language: str = ""
    interim_results: bool = False
    endpoint_silence_ms: int = 0
    candidate_silence_ms: int = 0
    min_endpoint_silence_ms: int = 0
    end_of_turn_hints: bool = False
    hinted_endpoint_silence_ms: int = 0

    @classmethod
    def from_message(cls, config: object) -> ConfigFields:
        return cls(**{f.name: getattr(config, f.name) for f in fields(cls)})


def validate_audio_format(cfg: ConfigFields) -> None:
    if not MIN_RATE <= cfg.sample_rate_hz <= MAX_RATE:
        raise InvalidRequest(
            f"config.sample_rate_hz={cfg.sample_rate_hz} is not supported; allowed {MIN_RATE} to {MAX_RATE} Hz "
            "(audio is resampled to 16000 Hz)"
        )
    if cfg.encoding not in (ENCODING_UNSPECIFIED, ENCODING_LINEAR16):
        raise InvalidRequest(
            f"config.encoding={cfg.encoding} is not supported; only LINEAR16 (1) or AUDIO_ENCODING_UNSPECIFIED (0, "
            "treated as LINEAR16): signed 16-bit little-endian mono PCM"
        )


def endpoint_config(cfg: ConfigFields, defaults: EndpointConfig) -> EndpointConfig:
    """The stream's endpointing settings: the request's values over the server defaults, checked."""
    for name, lowest in (
        ("endpoint_silence_ms", MIN_SILENCE_MS),
        ("candidate_silence_ms", MIN_CANDIDATE_SILENCE_MS),
        ("min_endpoint_silence_ms", MIN_SILENCE_MS),
        ("hinted_endpoint_silence_ms", MIN_SILENCE_MS),
    ):
        value = getattr(cfg, name)
        if value and not lowest <= value <= MAX_SILENCE_MS:
            raise InvalidRequest(
                f"config.{name}={value} is out of range; allowed 0 (server default) or {lowest} to {MAX_SILENCE_MS}"
            )
    endpoint = cfg.endpoint_silence_ms or defaults.endpoint_ms
    if cfg.min_endpoint_silence_ms:
        min_endpoint = cfg.min_endpoint_silence_ms
    else:
        min_endpoint = min(defaults.min_endpoint_ms, endpoint)
    if min_endpoint > endpoint:
        raise InvalidRequest(
            f"config.min_endpoint_silence_ms={min_endpoint} must not exceed endpoint_silence_ms={endpoint}"
        )
    hinted = cfg.hinted_endpoint_silence_ms or min(defaults.hinted_endpoint_ms, min_endpoint)
    if cfg.hinted_endpoint_silence_ms and not cfg.end_of_turn_hints:
        raise InvalidRequest("config.hinted_endpoint_silence_ms needs config.end_of_turn_hints")
    if hinted > min_endpoint:
        raise InvalidRequest(
            f"config.hinted_endpoint_silence_ms={hinted} must not exceed min_endpoint_silence_ms={min_endpoint}"
        )
    shortest = hinted if cfg.end_of_turn_hints else min_endpoint
    if cfg.candidate_silence_ms:
        candidate = cfg.candidate_silence_ms
    else:
        candidate = min(defaults.candidate_ms, max(MIN_SILENCE_MS // 2, shortest * 2 // 3))
    if candidate >= shortest:
        raise InvalidRequest(
            f"config.candidate_silence_ms={candidate} must be below the shortest endpoint "
            f"(min_endpoint_silence_ms={min_endpoint}, endpoint_silence_ms={endpoint}"
            + (f", hinted_endpoint_silence_ms={hinted})" if cfg.end_of_turn_hints else ")")
        )
    return replace(
        defaults,
        endpoint_ms=endpoint,
        min_endpoint_ms=min_endpoint,
        candidate_ms=candidate,
        interim=cfg.interim_results,
        hints=cfg.end_of_turn_hints,
        hinted_endpoint_ms=hinted,
    )


def validate_hint(text: str, probability: float, enabled: bool) -> None:
    """An `end_of_turn` hint: allowed when the stream's config enabled them, probability in [0, 1]."""
    if not enabled:
        raise InvalidRequest("`end_of_turn` hints need config.end_of_turn_hints=true in the first message")
    if not math.isfinite(probability) or not 0.0 <= probability <= 1.0:
        raise InvalidRequest(f"end_of_turn.probability={probability} is out of range; allowed 0 to 1")
    if len(text) > MAX_HINT_TEXT:
        raise InvalidRequest(f"end_of_turn.text is {len(text)} characters; at most {MAX_HINT_TEXT} are allowed")


def validate_pcm(pcm: bytes, what: str = "audio") -> None:
    if len(pcm) % 2:
        raise InvalidRequest(
            f"{what} has an odd number of bytes ({len(pcm)}); LINEAR16 audio is 2 bytes per sample, mono"
        )


def to_16k(pcm: bytes, sample_rate: int) -> np.ndarray:
    audio = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
    if sample_rate != SAMPLE_RATE and len(audio):
        audio = soxr.resample(audio, sample_rate, SAMPLE_RATE, quality="HQ").astype(np.float32)
    return audio


def _windows(regions: list[Region], probs: np.ndarray) -> list[Region]:
    """Merge near regions into decode windows of at most the model window; split longer ones at low-VAD frames."""
    max_len = int((MAX_WINDOW_S - 2 * PAD_S - 1) * SAMPLE_RATE)
    merged: list[Region] = []
    for r in regions:
        if merged and r.start - merged[-1].end < MERGE_GAP_S * SAMPLE_RATE and r.end - merged[-1].start <= max_len:
            merged[-1] = Region(merged[-1].start, r.end)
        else:
            merged.append(r)
    out: list[Region] = []
    for r in merged:
        start = r.start
        while r.end - start > max_len:
            lo, hi = (start + max_len // 2) // FRAME, (start + max_len) // FRAME
            cut = (lo + int(np.argmin(probs[lo:hi]))) * FRAME
            out.append(Region(start, cut))
            start = cut
        out.append(Region(start, r.end))
    return out


def recognize_clip(engine: SpeechEngine, vad: SileroVad, audio: np.ndarray, language: str) -> Transcript:
    """Blocking: run on the decode worker thread."""
    probs = vad.probabilities(audio)
    segments: list[Segment] = []
    decode_ms = 0.0
    pad = int(PAD_S * SAMPLE_RATE)
    for w in _windows(speech_regions(probs), probs):
        result = engine.transcribe(audio[max(0, w.start - pad) : w.end + pad], language)
        decode_ms += result.decode_ms
        if result.text:
            segments.append(Segment(result.text, w.start / SAMPLE_RATE, w.end / SAMPLE_RATE))
    return Transcript(" ".join(s.text for s in segments), segments, decode_ms)
