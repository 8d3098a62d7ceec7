"""The machine's sound devices (sounddevice/PortAudio): the microphone as an audio source and the
speaker as a sink (`orchestrator talk` without --input). sounddevice is imported when a device is
first used, so machines without PortAudio get NoAudioDeviceError, not an ImportError."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

from orchestrator.audio import BYTES_PER_SAMPLE, STT_SAMPLE_RATE_HZ, AudioSink


class NoAudioDeviceError(RuntimeError):
    pass


def import_sounddevice():  # type: ignore[no-untyped-def]
    """The sounddevice module, or NoAudioDeviceError when PortAudio or a device is missing."""
    try:
        import sounddevice
    except (ImportError, OSError) as error:
        raise NoAudioDeviceError(f"no audio input/output device found ({error})") from error
    return sounddevice


def check_audio_devices(need_input: bool = True, need_output: bool = True) -> None:
    sd = import_sounddevice()
    try:
        if need_input:
            sd.check_input_settings(channels=1, samplerate=STT_SAMPLE_RATE_HZ, dtype="int16")
        if need_output:
            sd.check_output_settings(channels=1, dtype="int16")
    except Exception as error:
        raise NoAudioDeviceError(f"no audio input/output device found ({error})") from error


class SoundDeviceSink(AudioSink):
    """Plays replies on the default output device (sounddevice/PortAudio)."""

    def __init__(self) -> None:
        self._sd = import_sounddevice()
        self._lock = threading.Lock()
        self._pending = bytearray()
        self._played = 0
        self._reply = bytearray()
        self._rate = 0
        self._stream: Any = None

    def _callback(self, outdata, frames, _time, _status) -> None:  # type: ignore[no-untyped-def]
        need = frames * BYTES_PER_SAMPLE
        with self._lock:
            chunk = bytes(self._pending[:need])
            del self._pending[:need]
            self._played += len(chunk) // BYTES_PER_SAMPLE
        outdata[: len(chunk)] = chunk
        if len(chunk) < need:
            outdata[len(chunk) :] = bytes(need - len(chunk))

    def begin(self, sample_rate_hz: int) -> None:
        if self._stream is None or self._rate != sample_rate_hz:
            if self._stream is not None:
                self._stream.close()
            self._rate = sample_rate_hz
            self._stream = self._sd.RawOutputStream(
                samplerate=sample_rate_hz, channels=1, dtype="int16", callback=self._callback
            )
            self._stream.start()
        with self._lock:
            self._pending.clear()
            self._played = 0
        self._reply = bytearray()

    def write(self, pcm: bytes) -> None:
        with self._lock:
            self._pending += pcm
        self._reply += pcm

    def played_samples(self) -> int:
        with self._lock:
            return self._played

    def stop(self) -> int:
        with self._lock:
            self._pending.clear()
            played = self._played
        del self._reply[played * BYTES_PER_SAMPLE :]
        return played

    async def drain(self) -> None:
        while True:
            with self._lock:
                if not self._pending:
                    break
            await asyncio.sleep(0.02)  # the device consumes audio on its own clock; nothing to await
        if self._stream is not None:
            await asyncio.sleep(float(self._stream.latency))

    def end(self) -> bytes:
        return bytes(self._reply)

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None


async def microphone(block_ms: int = 20) -> AsyncIterator[bytes]:
    """16 kHz s16le mono chunks from the default input device, as they are recorded."""
    sd = import_sounddevice()
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes] = asyncio.Queue()

    def callback(indata: Any, _frames: int, _time: Any, _status: Any) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, bytes(indata))

    blocksize = STT_SAMPLE_RATE_HZ * block_ms // 1000
    with sd.RawInputStream(
        samplerate=STT_SAMPLE_RATE_HZ, channels=1, dtype="int16", blocksize=blocksize, callback=callback
    ):
        while True:
            yield await queue.get()
