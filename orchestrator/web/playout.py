"""The reply's way to the page (a sink that streams it and learns what was heard) and the input clock."""

from __future__ import annotations

import asyncio
import bisect
import time
from collections.abc import Callable
from typing import Any

from orchestrator.audio import PlayoutSink
from orchestrator.web import protocol

Outgoing = dict[str, Any] | bytes | None


class SocketSink(PlayoutSink):
    """Plays the reply by streaming it to the page, which plays it at once (gap-free worklet).

    What the user has heard: by wall clock from the moment each chunk is sent (as for the other
    sinks), or, once the page reports how much of this reply left its speaker (`played`), that
    figure carried forward in real time — never more than the wall clock allows. The page lags
    the send by its network, buffering and output latency. `stop()` (barge-in) tells the page to
    drop what it has not played yet.
    """

    def __init__(self, out: asyncio.Queue[Outgoing], *, clock: Callable[[], float] = time.perf_counter) -> None:
        super().__init__(realtime=True, clock=clock)
        self._out = out
        self._now = clock
        self.begin_times: list[float] = []  # clock at each reply's first sample
        self.reply = 0  # number of the current reply (the page's reports name it)
        self._report: tuple[int, float] | None = None  # (samples the page played, when told)

    def begin(self, sample_rate_hz: int) -> None:
        super().begin(sample_rate_hz)
        self.reply += 1
        self._report = None
        self.begin_times.append(self._now())
        self._out.put_nowait({"type": "audio_start", "sample_rate_hz": sample_rate_hz, "reply": self.reply})

    def report_played(self, reply: int, samples: int) -> None:
        """The page's `played` message: `samples` of reply `reply` have left its speaker."""
        if reply == self.reply and self._active:
            self._report = (samples, self._now())

    def played_samples(self) -> int:
        wall = super().played_samples()
        if self._report is None:
            return wall
        samples, told = self._report
        return max(0, min(wall, samples + round((self._now() - told) * self.sample_rate_hz)))

    def _on_write(self, pcm: bytes) -> None:
        self._out.put_nowait(bytes(pcm))

    def _on_stop(self, played_samples: int) -> None:
        self._out.put_nowait({"type": "audio_stop", "played_samples": played_samples})

    def end(self) -> bytes:
        if self._active:
            self._out.put_nowait({"type": "audio_end"})
        return super().end()


class InputClock:
    """When each microphone frame arrived: maps a time back to a position in the session's input."""

    def __init__(self) -> None:
        self._times: list[float] = []
        self._ends: list[int] = []  # samples received up to and including each frame

    def record(self, end_sample: int, t: float) -> None:
        self._times.append(t)
        self._ends.append(end_sample)

    def sample_at(self, t: float) -> int | None:
        """The input sample being received at perf_counter time `t` (frames arrive in real time)."""
        if not self._times:
            return None
        i = min(bisect.bisect_left(self._times, t), len(self._times) - 1)
        start = self._ends[i - 1] if i > 0 else 0
        lag = int((self._times[i] - t) * protocol.SAMPLE_RATE_HZ)
        return max(start, self._ends[i] - max(0, lag))
