"""Use the idle core for the start of a reply: more llama.cpp threads while nothing else computes.

Why: on a 2-core box Qwen2.5-0.5B decodes ~29 tok/s on 1 thread and ~45 on 2 when the other core
is idle (measured, bench/RESULTS.md). In a voice turn the other services are idle exactly then:
the STT has just decoded the candidate and the TTS waits for the first phrase. But llama.cpp's
threads meet at a barrier after every operation, so 2 threads with the other core busy (Piper
rendering, a Whisper decode, another program) fall to ~1 tok/s. Hence a burst is
  * granted only when no other thread wants a CPU at that instant (`RunQueue`),
  * short: the unread end of the prompt and the first `tokens` of the reply (the first phrase,
    which is what the user waits for), then back to the base thread count,
  * given up at once when a step takes several times its expected time (the other core got busy),
  * only for a conversation that has the service to itself: with 2+ conversations at once,
    another one's STT starts decoding in the middle of a burst often enough that dead air p95
    rose from 2.1 to 4.1 s (2 conversations) and 3.6 to 6.0 s (4) (bench/RESULTS.md). Another
    conversation's model call within `shared_window_s` (a speaking user's words are prefilled
    every ~0.7 s) refuses the burst.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("llm-service")

PROBES = 3  # reads of the run queue; the smallest counts (our own gRPC thread may be running at one)


def _procs_running() -> int | None:
    """Threads runnable on the whole machine right now (/proc/stat procs_running), None where unknown."""
    try:
        with open("/proc/stat", "rb") as stat:
            for line in stat:
                if line.startswith(b"procs_running"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


class RunQueue:
    """How many threads besides the caller want a CPU at this instant.

    An instant reading, not an average: the LLM is called right after the STT finished decoding
    (a CANDIDATE or INTERIM), so any window of the last ~100 ms shows a busy core that is idle now
    (measured: 1.1-2.0 cores "busy" at most decisions of a quiet bench run). A program that keeps a
    core busy is runnable at every reading; short blips (the STT's VAD every 20 ms) rarely are, and
    cost a burst little when they are."""

    def __init__(self) -> None:
        self.cores = os.cpu_count() or 1
        self.available = _procs_running() is not None

    def others_running(self) -> int | None:
        readings = [_procs_running() for _ in range(PROBES)]
        known = [r for r in readings if r is not None]
        return max(0, min(known) - 1) if known else None  # - 1: the thread asking


@dataclass
class BurstPolicy:
    threads: int = 0  # 0: no burst
    tokens: int = 6  # generated tokens decoded with the burst threads
    stall_factor: float = 3.0  # a step this many times slower than the typical one ends the burst
    shared_window_s: float = 30.0  # another conversation's call this recent: the service is shared


class ThreadBurst:
    """Decides, per model call, how many threads llama.cpp uses. Worker thread only (not thread-safe)."""

    def __init__(
        self,
        policy: BurstPolicy,
        base_threads: int,
        base_batch: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy
        self.base = (base_threads, base_batch)
        self.monitor = RunQueue() if self.enabled else None
        self.granted = 0  # calls that ran with the burst (for the log / tests)
        self.refused_busy = 0
        self.refused_shared = 0
        self._clock = clock
        self._last_call: dict[str | None, float] = {}  # conversation (cache key) -> its latest model call
        self.stalls = 0
        self._typical_step_s = 0.0  # running median-ish of burst token steps

    @property
    def enabled(self) -> bool:
        return self.policy.threads > max(self.base)

    def may_burst(self, conversation: str | None = None) -> bool:
        """Ask just before the latency-critical part of a model call for `conversation` (its cache key)."""
        if self.monitor is None or not self.monitor.available:  # None: not enabled
            return False
        if self._shared_with_others(conversation):
            self.refused_shared += 1
            return False
        if self.monitor.cores < self.policy.threads:
            return False
        others = self.monitor.others_running()
        if others is None or others > self.monitor.cores - self.policy.threads:
            self.refused_busy += 1
            log.debug("thread burst refused: %s other threads runnable", others)
            return False
        self.granted += 1
        return True

    def _shared_with_others(self, conversation: str | None) -> bool:
        """Note this call; True when another conversation called within the window."""
        now = self._clock()
        horizon = now - self.policy.shared_window_s
        others = {key: at for key, at in self._last_call.items() if key != conversation and at >= horizon}
        self._last_call = {**others, conversation: now}  # older entries dropped: nothing accumulates
        return bool(others)

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
