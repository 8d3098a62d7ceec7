"""Use the idle core for the start of a reply: more llama.cpp threads while nothing else computes.

Why: on a 2-core box Qwen2.5-0.5B decodes ~29 tok/s on 1 thread and ~45 on 2 when the other core
is idle (measured, bench/RESULTS.md). In a voice turn the other services are idle exactly then:
the STT has just decoded the candidate and the TTS waits for the first phrase. But llama.cpp's
threads meet at a barrier after every operation, so 2 threads with the other core busy (Piper
rendering, a Whisper decode, another program) fall to ~1 tok/s. Hence a burst is
  * granted only when the rest of the machine was (nearly) idle just before (`CpuMonitor`),
  * short: the unread end of the prompt and the first `tokens` of the reply (the first phrase,
    which is what the user waits for), then back to the base thread count,
  * given up at once when a step takes several times its expected time (the other core got busy).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass

log = logging.getLogger("llm-service")

SAMPLE_S = 0.05


def _read_cpu() -> tuple[float, float] | None:
    """(busy, total) jiffies of the whole machine from /proc/stat, None where there is none."""
    try:
        with open("/proc/stat", "rb") as stat:
            fields = [float(x) for x in stat.readline().split()[1:]]
    except OSError:
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def _own_jiffies() -> float:
    """This process's CPU time in jiffies (all threads), the unit of /proc/stat."""
    t = os.times()
    return (t.user + t.system) * os.sysconf("SC_CLK_TCK")


class CpuMonitor:
    """Samples /proc/stat every 50 ms in a daemon thread; `others_busy_cores()` is how many cores the
    rest of the machine (everything but this process) kept busy over the last `window_s`."""

    def __init__(self, window_s: float = 0.1) -> None:
        self.window_s = window_s
        self.cores = os.cpu_count() or 1
        self._samples: deque[tuple[float, float, float, float]] = deque(maxlen=int(2.0 / SAMPLE_S))
        self._lock = threading.Lock()
        self.available = _read_cpu() is not None
        self._stop = threading.Event()
        if self.available:
            self._sample()
            threading.Thread(target=self._run, name="cpu-monitor", daemon=True).start()

    def _sample(self) -> None:
        cpu = _read_cpu()
        if cpu is not None:
            with self._lock:
                self._samples.append((time.monotonic(), cpu[0], cpu[1], _own_jiffies()))

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            self._sample()

    def others_busy_cores(self) -> float | None:
        """None when unknown (no /proc/stat, or not two samples yet)."""
        self._sample()
        with self._lock:
            if len(self._samples) < 2:
                return None
            now, busy, total, own = self._samples[-1]
            start = next((s for s in self._samples if now - s[0] <= self.window_s), self._samples[0])
            if start is self._samples[-1]:
                start = self._samples[-2]
        d_total = total - start[2]
        if d_total <= 0:
            return None
        others = (busy - start[1]) - (own - start[3])
        return max(0.0, others / d_total * self.cores)

    def close(self) -> None:
        self._stop.set()


@dataclass
class BurstPolicy:
    threads: int = 0  # 0: no burst
    tokens: int = 6  # generated tokens decoded with the burst threads
    max_others_busy: float = 0.3  # cores the rest of the machine may have used in the last 100 ms
    stall_factor: float = 3.0  # a step this many times slower than the typical one ends the burst


class ThreadBurst:
    """Decides, per model call, how many threads llama.cpp uses. Worker thread only (not thread-safe)."""

    def __init__(self, policy: BurstPolicy, base_threads: int, base_batch: int, monitor: CpuMonitor | None) -> None:
        self.policy = policy
        self.base = (base_threads, base_batch)
        self.monitor = monitor
        self.granted = 0  # calls that ran with the burst (for the log / tests)
        self.refused_busy = 0
        self.stalls = 0
        self._typical_step_s = 0.0  # running median-ish of burst token steps

    @property
    def enabled(self) -> bool:
        return self.policy.threads > max(self.base)

    def may_burst(self) -> bool:
        """Ask just before the latency-critical part of a call."""
        if not self.enabled or self.monitor is None or not self.monitor.available:
            return False
        if self.monitor.cores < self.policy.threads:
            return False
        others = self.monitor.others_busy_cores()
        if others is None or others > self.policy.max_others_busy:
            self.refused_busy += 1
            log.debug("thread burst refused: the rest of the machine used %s cores", others)
            return False
        self.granted += 1
        log.debug("thread burst granted: the rest of the machine used %.2f cores", others)
        return True

    def step_stalled(self, step_s: float) -> bool:
        """A burst token took `step_s`: True when that is a stall (then the caller ends the burst)."""
        typical = self._typical_step_s
        if typical and step_s > self.policy.stall_factor * typical:
            self.stalls += 1
            log.info("thread burst ended: a token took %.0f ms (typical %.0f ms)", step_s * 1000, typical * 1000)
            return True
        # Slow-moving estimate that a single stall does not drag up.
        self._typical_step_s = step_s if not typical else typical + 0.1 * (min(step_s, 2 * typical) - typical)
        return False
