"""The LLM uses the idle second core for the start of a reply, and never a busy one.

Why it matters to a user: 2 llama.cpp threads on 2 cores decode ~1.6x faster when the other core
is idle, but ~20x SLOWER when it is busy (the threads wait for each other at every layer), so a
burst granted on a busy machine would turn 1 s of dead air into 10 s.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from llm_service.engine import Message, Sampling
from llm_service.thread_burst import BurstPolicy, RunQueue, ThreadBurst


class ScriptedLoad:
    """Stands in for RunQueue: reports the load the test sets (a fake, for the policy's unit tests)."""

    def __init__(self, others_running: int | None, cores: int = 2) -> None:
        self.others = others_running
        self.cores = cores
        self.available = True

    def others_running(self) -> int | None:
        return self.others


def burst(others_running: int | None, cores: int = 2, threads: int = 2) -> ThreadBurst:
    b = ThreadBurst(BurstPolicy(threads=threads), 1, 1)
    b.monitor = ScriptedLoad(others_running, cores) if b.enabled else None  # type: ignore[assignment]
    return b


def test_a_burst_is_granted_only_while_no_other_thread_wants_a_cpu() -> None:
    assert burst(0).may_burst()
    busy = burst(1)  # e.g. Piper rendering, a Whisper decode, another program
    assert not busy.may_burst() and busy.refused_busy == 1
    assert burst(2, cores=4).may_burst(), "4 cores: two others running still leave two for the burst"
    assert not burst(None).may_burst(), "unknown load must not be taken for idle"


def test_a_conversation_gets_the_burst_only_while_it_has_the_service_to_itself() -> None:
    """Two users at once: a burst for one is refused while the other spoke in the last 30 s (their
    STT would start decoding in the middle of it); alone again after the window, the burst is back."""
    now = [100.0]
    b = ThreadBurst(BurstPolicy(threads=2), 1, 1, clock=lambda: now[0])
    b.monitor = ScriptedLoad(0)  # type: ignore[assignment]
    assert b.may_burst("anna") and b.may_burst("anna"), "one conversation, any number of calls"
    now[0] += 5.0
    assert not b.may_burst("ben"), "anna called 5 s ago"
    now[0] += 1.0
    assert not b.may_burst("anna"), "ben called 1 s ago"
    assert b.refused_shared == 2 and b.granted == 2
    now[0] += b.policy.shared_window_s + 0.1
    assert b.may_burst("ben"), "anna has been quiet for longer than the window"
    assert set(b._last_call) == {"ben"}, "conversations older than the window are forgotten (nothing accumulates)"


def test_no_burst_without_a_spare_core_or_when_it_would_not_add_threads() -> None:
    assert not burst(0, cores=1).may_burst()
    assert not burst(0, threads=1).may_burst()
    assert not burst(0, threads=0).enabled


def test_a_token_several_times_slower_than_usual_ends_the_burst() -> None:
    b = burst(0)
    for _ in range(5):
        assert not b.step_stalled(0.025)
    assert b.step_stalled(0.5)
    assert b.stalls == 1
    assert not b.step_stalled(0.03), "one stall must not raise the typical step so that stalls pass unseen"
    assert b.step_stalled(0.2)


def test_the_run_queue_sees_a_program_that_keeps_a_core_busy() -> None:
    queue = RunQueue()
    if not queue.available:
        pytest.skip("no /proc/stat on this system (the burst is then never granted)")
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        deadline = time.monotonic() + 10.0
        seen = queue.others_running()
        while not seen and time.monotonic() < deadline:  # until the child has started spinning
            seen = queue.others_running()
        assert seen is not None and seen >= 1
    finally:
        hog.kill()
        hog.wait()


@pytest.mark.real
def test_after_a_burst_the_model_is_back_on_its_base_threads() -> None:
    """Real llama.cpp engine (SmolLM2): the burst is used for the reply and undone afterwards, so a
    machine that gets busy later is not hit by 2 spinning threads."""
    import llama_cpp

    from llm_service.llama_engine import EngineConfig, LlamaCppEngine
    from llm_service.models import resolve_model

    name, path = resolve_model("smollm2-135m")
    engine = LlamaCppEngine(EngineConfig(name, path, n_ctx=512, burst=BurstPolicy(threads=2, tokens=3)))
    engine.burst.monitor = ScriptedLoad(0)  # type: ignore[assignment]  # the policy, not this box's load, is under test
    try:
        result = engine.generate(
            [Message("user", "Name three colours.")],
            12,
            Sampling(temperature=0.0),
            None,
            lambda _t: None,
            lambda: False,
        )
        assert result.completion_tokens > 3 and result.text.strip()
        assert engine.burst.granted == 1
        ctx = engine._llm._ctx.ctx
        assert (llama_cpp.llama_n_threads(ctx), llama_cpp.llama_n_threads_batch(ctx)) == (1, 1)

        engine.burst.monitor = ScriptedLoad(1)  # type: ignore[assignment]
        engine.prefill([Message("user", "What time is it")], None)
        assert engine.burst.refused_busy == 1
        assert (llama_cpp.llama_n_threads(ctx), llama_cpp.llama_n_threads_batch(ctx)) == (1, 1)
    finally:
        engine.close()
