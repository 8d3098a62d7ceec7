"""Fast tests (fake services) of the work the orchestrator does while the user speaks: the words so
far go to the LLM's Prefill, and the LLM's end-of-turn probability goes back to the STT as the
endpoint hint (from Prefill for an INTERIM, from the held reply's Generate for a CANDIDATE_FINAL).
Only a FINAL releases audio. Sync mode (the baseline) does none of it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from orchestrator import Conversation, TurnResult
from orchestrator.config import ServiceAddresses
from orchestrator.listening import pcm_source
from orchestrator.speculation import Prefiller
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
from voice.llm.v1 import llm_pb2

WAIT_S = 10.0


def silence(seconds: float) -> bytes:
    return bytes(int(seconds * 16000) * 2)


async def converse(steps: list[SttStep], llm: FakeLanguageModel, **kwargs: Any) -> tuple[list[TurnResult], Any]:
    stt = FakeSpeechToText(steps)
    fakes: FakeServices = await serve_fakes(stt, llm, FakeTextToSpeech(samples_per_char=160))
    address = fakes.address
    conversation = Conversation(ServiceAddresses(stt=address, llm=address, tts=address), sink=RecordingSink(), **kwargs)
    try:
        results = await asyncio.wait_for(conversation.run_file(silence(1.0), 16000, pace=False), WAIT_S)
        return results, (fakes, conversation)
    finally:
        await conversation.close()
        await fakes.server.stop(None)


def test_interim_words_are_prefilled_and_the_candidate_is_scored_by_the_held_reply() -> None:
    text = "what time is it?"

    async def scenario() -> tuple[list[TurnResult], FakeSpeechToText, FakeLanguageModel, dict[str, float]]:
        llm = FakeLanguageModel("It is noon.", end_of_turn_probability=0.8)
        stt = FakeSpeechToText()
        stt.steps = [
            SttStep(Ev.SPEECH_STARTED, at_ms=100, start_ms=100),
            SttStep(Ev.INTERIM, "what time", at_ms=300, start_ms=100),
            SttStep(Ev.CANDIDATE_FINAL, text, at_ms=600, start_ms=100, end_ms=500),
            SttStep(Ev.FINAL, text, start_ms=100, end_ms=500),  # when the input ends
        ]

        async def microphone() -> AsyncIterator[bytes]:
            """A second of audio, then open (like a live microphone) until the STT has both hints.

            Unpaced, the audio is sent at once: a hint that comes after the input has ended, or after
            the FINAL has switched streams, is no longer sent (the STT ends the utterance without it),
            so the test waits for both instead of racing the Prefill and the held reply's Generate.
            """
            async for chunk in pcm_source(silence(1.0), pace=False):
                yield chunk
            await stt.hinted("what time").wait()
            await stt.hinted(text).wait()

        fakes = await serve_fakes(stt, llm, FakeTextToSpeech(samples_per_char=160))
        conversation = Conversation(
            ServiceAddresses(stt=fakes.address, llm=fakes.address, tts=fakes.address), sink=RecordingSink()
        )
        try:
            results = await asyncio.wait_for(conversation.run(microphone(), pace=False), WAIT_S)
        finally:
            await conversation.close()
            await fakes.server.stop(None)
        return results, stt, llm, conversation.speculation.as_dict()

    results, stt, llm, speculation = asyncio.run(scenario())
    config = stt.configs[0]
    assert config.end_of_turn_hints and config.candidate_silence_ms == 32, "a reply starts at the first pause"
    assert llm.prefills == ["what time"], "the INTERIM's words were read into the LLM session"
    hints = {t: round(p, 3) for t, p in stt.hints}
    assert hints["what time"] == 0.1, "its end-of-turn score went to the STT"
    assert hints[text] == 0.8, "the held reply's Generate scored the candidate"
    (turn,) = results
    assert turn.preemptive_used and turn.end_of_turn_probability == pytest.approx(0.8) and turn.reply == "It is noon."
    assert len(llm.generations) == 1
    assert speculation["discarded_replies"] == 0 and speculation["tokens"] == 3


def test_sync_mode_sends_no_prefill_and_no_hints() -> None:
    text = "what time is it?"
    steps = [
        SttStep(Ev.SPEECH_STARTED, at_ms=100, start_ms=100),
        SttStep(Ev.INTERIM, "what time", at_ms=300, start_ms=100),
        SttStep(Ev.CANDIDATE_FINAL, text, at_ms=600, start_ms=100, end_ms=500),
        SttStep(Ev.FINAL, text, at_ms=800, start_ms=100, end_ms=500),
    ]
    llm = FakeLanguageModel("It is noon.")

    async def scenario() -> tuple[list[TurnResult], Any]:
        return await converse(steps, llm, mode="sync")

    results, (fakes, _) = asyncio.run(scenario())
    assert len(results) == 1 and not llm.prefills and not fakes.stt.hints
    assert not fakes.stt.configs[0].end_of_turn_hints


class HeldPrefill:
    """An LLM stub whose Prefill answers only when the test releases it (no gRPC: Prefiller alone)."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.release = asyncio.Event()
        self.called = asyncio.Event()

    async def Prefill(self, request: llm_pb2.PrefillRequest, timeout: float) -> llm_pb2.PrefillResponse:
        self.texts.append(request.text)
        self.called.set()
        await self.release.wait()
        return llm_pb2.PrefillResponse(end_of_turn_probability=0.75)


def test_a_prefill_answering_after_the_turn_ended_scores_nothing_in_the_next_turn() -> None:
    """The user said "yes" in one turn, the turn ended before its Prefill answered, and says "yes"
    again: the old answer is neither sent as a hint nor reused, the new words are prefilled."""

    async def scenario() -> tuple[list[tuple[str, float]], list[str], dict[str, float]]:
        llm, hints = HeldPrefill(), list[tuple[str, float]]()
        prefiller = Prefiller(llm, "s")
        prefiller.submit("yes", lambda text, p: hints.append((text, p)))
        await asyncio.wait_for(llm.called.wait(), WAIT_S)
        prefiller.reset()  # the next turn is listened for
        llm.release.set()
        await asyncio.wait_for(prefiller._task, WAIT_S)  # type: ignore[arg-type]
        late = dict(prefiller.scores)
        prefiller.submit("yes", lambda text, p: hints.append((text, p)))
        await asyncio.wait_for(prefiller._task, WAIT_S)  # type: ignore[arg-type]
        await prefiller.close()
        return hints, llm.texts, late

    hints, texts, late = asyncio.run(scenario())
    assert late == {}, "the old turn's answer was kept as a score"
    assert texts == ["yes", "yes"], "the second turn's words were read into the LLM again"
    assert hints == [("yes", 0.75)], "only the second turn's answer became a hint"
