"""Conversation scenarios on the fake services that more than one test module checks.

`retracted_candidate()`: the user pauses after "what is the"; the STT's CANDIDATE_FINAL starts a
speculative reply (its Generate held after the first word, its first audio synthesized, nothing
played); the candidate is retracted (the user goes on), and once the speculative Generate and
StreamingSynthesize have ended the FINAL "what is the capital of France" is answered.
test_orchestrator_chain checks the audio and the LLM history, test_orchestrator_telemetry the trace.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

from orchestrator import Conversation, TurnResult
from orchestrator.config import ServiceAddresses
from tests.fakes import (
    Ev,
    FakeLanguageModel,
    FakeServices,
    FakeSpeechToText,
    FakeTextToSpeech,
    RecordingSink,
    SttStep,
    serve_fakes,
)

WAIT_S = 10.0
CANDIDATE = "what is the"
FINAL = "what is the capital of France"
SAMPLES_PER_CHAR = 160


def reply_to(text: str) -> str:
    """The fake LLM's reply to the user's `text`."""
    return f"Sure. You asked {text}."


@dataclass
class Retraction:
    results: list[TurnResult]
    fakes: FakeServices
    session_id: str
    written_before_retraction: int  # sink writes while the speculative reply was held
    history: list[tuple[str, str]]  # the fake LLM's session history at the end of the run (before close)


async def _wait(awaitable: Awaitable[Any], what: str) -> None:
    try:
        await asyncio.wait_for(awaitable, WAIT_S)
    except asyncio.TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


async def retracted_candidate() -> Retraction:
    """Run the retraction scenario (module docstring) to its end; the fake servers are stopped."""
    retract_gate, final_gate = asyncio.Event(), asyncio.Event()
    steps = [
        SttStep(Ev.SPEECH_STARTED, at_ms=100, start_ms=100),
        SttStep(Ev.CANDIDATE_FINAL, CANDIDATE, at_ms=600, start_ms=100, end_ms=500),
        SttStep(Ev.CANDIDATE_RETRACTED, after=retract_gate, start_ms=100),
        SttStep(Ev.FINAL, FINAL, after=final_gate, start_ms=100, end_ms=1500),
    ]
    llm = FakeLanguageModel(reply_to, hold_after_words=1)
    sink = RecordingSink()
    fakes = await serve_fakes(FakeSpeechToText(steps), llm, FakeTextToSpeech(samples_per_char=SAMPLES_PER_CHAR))
    addresses = ServiceAddresses(stt=fakes.address, llm=fakes.address, tts=fakes.address)
    try:
        async with Conversation(addresses, sink=sink) as conversation:
            task = asyncio.create_task(conversation.run_file(bytes(64000), 16000, pace=False))
            await _wait(llm.held.wait(), "the speculative generation to start")
            await _wait(fakes.tts.first_audio_sent.wait(), "speculative audio")
            written = len(sink.written)
            retract_gate.set()
            await _wait(llm.generation_cancelled.wait(), "the speculative Generate to be cancelled")
            await _wait(fakes.tts.syntheses[0].ended.wait(), "the speculative StreamingSynthesize to end")
            llm.release.set()
            final_gate.set()
            results = await asyncio.wait_for(task, WAIT_S)
            history = list(llm.sessions.get(conversation.session_id, []))
        return Retraction(results, fakes, conversation.session_id, written, history)
    finally:
        await fakes.server.stop(None)
