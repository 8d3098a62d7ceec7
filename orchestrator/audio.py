"""Audio in and out: WAV reading/conversion, and the sinks the agent's reply is played into
(the sound-device sink and the microphone: `device.py`).

A sink "plays" audio as it arrives and knows, by wall clock, how much of the current reply the
user has heard: that is what barge-in needs to tell the LLM what was actually heard.
"""

from __future__ import annotations

import abc
import asyncio
import struct
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

STT_SAMPLE_RATE_HZ = 16_000
BYTES_PER_SAMPLE = 2


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """Samples (float32, shape frames x channels, -1..1) and rate of a PCM or float WAV file."""
    data = Path(path).read_bytes()
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError(f"{path}: not a WAV file (RIFF/WAVE header missing)")
    pos = 12
    fmt: tuple[int, int, int, int] | None = None
    pcm: bytes | None = None
    while pos + 8 <= len(data):
        chunk_id, size = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        body = data[pos + 8 : pos + 8 + size]
        if chunk_id == b"fmt ":
            tag, channels, rate = struct.unpack("<HHI", body[:8])
            bits = struct.unpack("<H", body[14:16])[0]
            if tag == 0xFFFE and len(body) >= 26:  # WAVE_FORMAT_EXTENSIBLE: real tag in the sub-format GUID
                tag = struct.unpack("<H", body[24:26])[0]
            fmt = (tag, channels, rate, bits)
        elif chunk_id == b"data":
            pcm = body
        pos += 8 + size + (size & 1)
    if fmt is None or pcm is None:
        raise ValueError(f"{path}: WAV file without fmt or data chunk")
    tag, channels, rate, bits = fmt
    if tag == 1 and bits == 16:
        samples = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2").astype(np.float32) / 32768.0
    elif tag == 1 and bits == 8:
        samples = (np.frombuffer(pcm, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif tag == 1 and bits == 24:
        raw = np.frombuffer(pcm[: len(pcm) // 3 * 3], dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        ints = raw[:, 0] | (raw[:, 1] << 8) | (raw[:, 2] << 16)
        ints = np.where(ints >= 1 << 23, ints - (1 << 24), ints)
        samples = ints.astype(np.float32) / float(1 << 23)
    elif tag == 1 and bits == 32:
        samples = np.frombuffer(pcm[: len(pcm) // 4 * 4], dtype="<i4").astype(np.float32) / float(1 << 31)
    elif tag == 3 and bits in (32, 64):
        samples = np.frombuffer(pcm, dtype="<f4" if bits == 32 else "<f8").astype(np.float32)
    else:
        raise ValueError(f"{path}: unsupported WAV format (tag {tag}, {bits} bits); use PCM 8/16/24/32-bit or float")
    frames = len(samples) // max(channels, 1)
    return samples[: frames * channels].reshape(frames, channels), rate


def to_pcm16_mono(samples: np.ndarray, rate: int, target_rate: int = STT_SAMPLE_RATE_HZ) -> bytes:
    """Down-mix to mono, resample to `target_rate`, return signed 16-bit little-endian PCM."""
    mono = samples.mean(axis=1) if samples.ndim == 2 else samples
    if rate != target_rate and len(mono):
        import soxr

        mono = soxr.resample(mono.astype(np.float32), rate, target_rate)
    return np.clip(np.round(mono * 32768.0), -32768, 32767).astype("<i2").tobytes()


def load_wav_pcm16(path: str | Path, target_rate: int = STT_SAMPLE_RATE_HZ) -> bytes:
    """A WAV file of any rate/channels as 16-bit mono PCM at `target_rate`."""
    samples, rate = read_wav(path)
    return to_pcm16_mono(samples, rate, target_rate)


def resample_pcm16(pcm: bytes, rate: int, target_rate: int) -> bytes:
    if rate == target_rate or not pcm:
        return pcm
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
    return to_pcm16_mono(samples, rate, target_rate)


def wav_bytes(pcm: bytes, sample_rate_hz: int) -> bytes:
    """A complete mono 16-bit WAV file holding `pcm`."""
    return _wav_header(len(pcm), sample_rate_hz) + pcm


def write_wav(path: str | Path, pcm: bytes, sample_rate_hz: int) -> None:
    Path(path).write_bytes(wav_bytes(pcm, sample_rate_hz))


def _wav_header(data_bytes: int, rate: int) -> bytes:
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        36 + data_bytes,
        b"WAVE",
        b"fmt ",
        16,
        1,
        1,
        rate,
        rate * BYTES_PER_SAMPLE,
        BYTES_PER_SAMPLE,
        16,
        b"data",
        data_bytes,
    )


def rms(pcm: bytes) -> float:
    """Root mean square of 16-bit PCM, in full-scale units (0..1)."""
    if len(pcm) < 2:
        return 0.0
    samples = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2").astype(np.float64) / 32768.0
    return float(np.sqrt(np.mean(samples**2)))


class AudioSink(abc.ABC):
    """Where the agent's replies go. One reply at a time: begin() → write()… → end() (or stop())."""

    @abc.abstractmethod
    def begin(self, sample_rate_hz: int) -> None:
        """A new reply starts; its audio comes at `sample_rate_hz`."""

    @abc.abstractmethod
    def write(self, pcm: bytes) -> None:
        """Queue audio for playback at once (never blocks)."""

    @abc.abstractmethod
    def played_samples(self) -> int:
        """Samples of the current reply the user has heard so far."""

    @abc.abstractmethod
    def stop(self) -> int:
        """Barge-in: silence at once, drop what has not been played; returns the samples played."""

    @abc.abstractmethod
    async def drain(self) -> None:
        """Wait until the current reply has been played to the end."""

    @abc.abstractmethod
    def end(self) -> bytes:
        """The current reply is over; returns the audio of it that was played."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """No more replies."""


class PlayoutSink(AudioSink):
    """Simulated real-time playback: audio plays from the moment it is written, at its sample rate.

    With `realtime=False` audio counts as played as soon as it is written (for --no-pace runs).
    Keeps every reply's played audio in `replies`.
    """

    def __init__(self, *, realtime: bool = True, clock: Callable[[], float] = time.perf_counter) -> None:
        self.realtime = realtime
        self._clock = clock
        self.sample_rate_hz = 0
        self.replies: list[bytes] = []
        self._buffer = bytearray()
        self._segments: list[tuple[float, int]] = []  # (wall start, samples)
        self._end_t = 0.0
        self._active = False

    def begin(self, sample_rate_hz: int) -> None:
        self.sample_rate_hz = sample_rate_hz
        self._buffer = bytearray()
        self._segments = []
        self._end_t = self._clock()
        self._active = True

    def write(self, pcm: bytes) -> None:
        if not self._active:
            return
        now = self._clock()
        start = max(now, self._end_t)
        samples = len(pcm) // BYTES_PER_SAMPLE
        self._segments.append((start, samples))
        self._end_t = start + samples / self.sample_rate_hz
        self._buffer += pcm
        self._on_write(pcm)

    def _on_write(self, pcm: bytes) -> None:
        """Hook for subclasses (e.g. write to a file as the audio arrives)."""

    def played_samples(self) -> int:
        total = len(self._buffer) // BYTES_PER_SAMPLE
        if not self.realtime:
            return total
        now = self._clock()
        played = 0
        for start, samples in self._segments:
            if now <= start:
                break
            played += min(samples, int((now - start) * self.sample_rate_hz))
        return min(played, total)

    def stop(self) -> int:
        played = self.played_samples()
        del self._buffer[played * BYTES_PER_SAMPLE :]
        self._segments = [(self._clock() - played / max(self.sample_rate_hz, 1), played)]
        self._end_t = self._clock()
        self._on_stop(played)
        return played

    def _on_stop(self, played_samples: int) -> None:
        """Hook for subclasses: the reply was cut after `played_samples`."""

    async def drain(self) -> None:
        if self.realtime:
            remaining = self._end_t - self._clock()
            if remaining > 0:
                await asyncio.sleep(remaining)  # playback takes real time

    def end(self) -> bytes:
        audio = bytes(self._buffer)
        if self._active:
            self.replies.append(audio)
        self._active = False
        return audio


class MemorySink(PlayoutSink):
    """In-memory sink (tests, benchmark): replies kept in `replies`."""


class WavFileSink(PlayoutSink):
    """Writes replies to a WAV file as the audio arrives; a barged-in reply is cut where it stopped.

    Replies are separated by `gap_s` of silence; later replies are resampled to the first one's rate.
    """

    def __init__(self, path: str | Path, *, realtime: bool = True, gap_s: float = 0.3) -> None:
        super().__init__(realtime=realtime)
        self.path = Path(path)
        self._file_rate = 0
        self._gap_s = gap_s
        self._reply_start = 0
        self._rate_in = 0
        self._file = open(self.path, "wb")
        self._file.write(_wav_header(0, 0))
        self._data_bytes = 0

    def begin(self, sample_rate_hz: int) -> None:
        super().begin(sample_rate_hz)
        if not self._file_rate:
            self._file_rate = sample_rate_hz
        elif self._data_bytes and self._gap_s > 0:
            self._append(bytes(int(self._gap_s * self._file_rate) * BYTES_PER_SAMPLE))
        self._reply_start = self._data_bytes
        self._rate_in = sample_rate_hz

    def _append(self, pcm: bytes) -> None:
        self._file.write(pcm)
        self._data_bytes += len(pcm)
        self._file.flush()

    def _on_write(self, pcm: bytes) -> None:
        self._append(resample_pcm16(pcm, self._rate_in, self._file_rate))

    def _on_stop(self, played_samples: int) -> None:
        keep = int(played_samples * self._file_rate / max(self._rate_in, 1)) * BYTES_PER_SAMPLE
        self._data_bytes = min(self._data_bytes, self._reply_start + keep)
        self._file.seek(44 + self._data_bytes)
        self._file.truncate()

    def close(self) -> None:
        if self._file.closed:
            return
        self._file.seek(0)
        self._file.write(_wav_header(self._data_bytes, self._file_rate or 16_000))
        self._file.close()
