"""The orchestrator end to end on the three real services (bundled models): the session's shared stack."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from opentelemetry.sdk.trace import TracerProvider

from orchestrator import Conversation, TurnResult
from orchestrator.audio import STT_SAMPLE_RATE_HZ, MemorySink, rms
from orchestrator.config import ServiceAddresses
from orchestrator.events import ConversationEvent, EventKind
from orchestrator.listening import CHUNK_MS
from orchestrator.report import waterfall
from tests.helpers import FIXTURES, GREEDY, pcm, words
from tests.stack import Stack
from voice.llm.v1 import llm_pb2, llm_pb2_grpc

pytestmark = pytest.mark.real


@pytest.fixture()
def addresses(stack: Stack) -> ServiceAddresses:
    return stack.addresses  # type: ignore[no-any-return]


async def history(addresses: ServiceAddresses, session_id: str) -> list[tuple[str, str]]:
    async with grpc.aio.insecure_channel(addresses.llm) as channel:
        reply = await llm_pb2_grpc.LanguageModelStub(channel).GetSession(
            llm_pb2.GetSessionRequest(session_id=session_id), timeout=10
        )
    return [(m.role, m.content) for m in reply.messages if m.role != "system"]


def test_spoken_question_gives_transcript_reply_and_audio(addresses: ServiceAddresses) -> None:
    async def scenario() -> list[TurnResult]:
        # The library installs no tracer provider (entry points do): this one gives the turn a real trace id.
        async with Conversation(
            addresses, sampling=GREEDY, max_tokens=60, tracer_provider=TracerProvider()
        ) as conversation:
            return await conversation.run_file(pcm("weather_paris.wav"), STT_SAMPLE_RATE_HZ, pace=False)

    results = asyncio.run(asyncio.wait_for(scenario(), 90))
    assert len(results) == 1, [r.transcript for r in results]
    turn = results[0]
    assert {"weather", "paris", "today"} <= words(turn.transcript), turn.transcript
    assert len(turn.reply.split()) >= 3
    assert turn.audio_s > 0.5 and rms(turn.audio) > 0.01, "the reply must be audible"
    assert turn.sample_rate_hz > 0 and turn.dead_air_ms is not None and turn.total_ms is not None
    assert len(turn.trace_id) == 32 and int(turn.trace_id, 16) != 0


def test_streaming_speaks_while_the_reply_is_written_and_sync_waits_for_all_of_it(addresses: ServiceAddresses) -> None:
    """Same question, same greedy reply: the streaming chain hands the first
    sentence to TTS and plays it while the LLM still writes; sync mode synthesizes only the whole
    reply. (Which one is faster is a timing claim: `make bench` measures it side by side.)"""
    name = "recipe.wav"
    audio = pcm(name)

    async def one(mode: str) -> TurnResult:
        # Playback is not waited for (realtime=False): only the order of the first events matters here.
        async with Conversation(
            addresses,
            mode=mode,
            sampling=GREEDY,
            max_tokens=60,
            sink=MemorySink(realtime=False),  # type: ignore[arg-type]
        ) as conversation:
            results = await conversation.run_file(audio, STT_SAMPLE_RATE_HZ, pace=False)
        assert len(results) == 1, [r.transcript for r in results]
        return results[0]

    async def scenario() -> tuple[TurnResult, TurnResult]:
        streaming = await one("streaming")
        sync = await one("sync")
        return streaming, sync

    streaming, sync = asyncio.run(asyncio.wait_for(scenario(), 150))
    print(f"\n{waterfall(streaming)}\n{waterfall(sync)}")
    assert streaming.reply == sync.reply and len(streaming.reply.split()) > 20, (streaming.reply, sync.reply)
    assert streaming.first_sentence_ms is not None and streaming.tts_ttfa_ms is not None
    assert streaming.llm_done_ms is not None
    assert streaming.first_sentence_ms < streaming.llm_done_ms, "the first sentence went to TTS before the reply ended"
    assert streaming.tts_ttfa_ms < streaming.llm_done_ms, "the first audio came while the LLM still wrote"
    assert sync.tts_ttfa_ms is not None and sync.llm_done_ms is not None
    assert sync.tts_ttfa_ms >= sync.llm_done_ms, "sync mode synthesizes only the whole reply"


def test_two_turn_conversation_keeps_memory(addresses: ServiceAddresses) -> None:
    async def scenario() -> tuple[list[TurnResult], list[tuple[str, str]]]:
        async with Conversation(addresses, sampling=GREEDY, max_tokens=40) as conversation:
            first = await conversation.run_file(pcm("timer.wav"), STT_SAMPLE_RATE_HZ, pace=False)
            second = await conversation.run_file(pcm("tokyo_time.wav"), STT_SAMPLE_RATE_HZ, pace=False)
            return first + second, await history(addresses, conversation.session_id)

    results, messages = asyncio.run(asyncio.wait_for(scenario(), 120))
    assert len(results) == 2, [r.transcript for r in results]
    assert [role for role, _ in messages] == ["user", "assistant", "user", "assistant"]
    assert messages[0][1] == results[0].transcript and messages[2][1] == results[1].transcript
    assert {"timer", "minutes"} <= words(messages[0][1]) and {"tokyo"} <= words(messages[2][1])
    assert messages[1][1] == results[0].reply and messages[3][1] == results[1].reply


def test_barge_in_cancels_the_reply_and_the_history_keeps_only_what_was_heard(addresses: ServiceAddresses) -> None:
    """A second question spoken while the agent is talking: playback stops, LLM and TTS are
    cancelled, the LLM history holds the heard part, then the second question is answered."""
    sink = MemorySink(realtime=True)
    first, second = pcm("recipe.wav"), pcm("timer.wav")
    chunk = STT_SAMPLE_RATE_HZ * 2 * CHUNK_MS // 1000
    injected: list[int] = []

    async def microphone() -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        sent = 0

        async def paced(audio: bytes) -> AsyncIterator[bytes]:
            nonlocal sent
            for offset in range(0, len(audio), chunk):
                sent += 1
                await asyncio.sleep(max(0.0, start + sent * CHUNK_MS / 1000 - loop.time()))  # real-time "mic"
                yield audio[offset : offset + chunk]

        async for piece in paced(first):
            yield piece
        silence = bytes(chunk)
        waited = 0
        # The user listens until the agent has been audible for 0.3 s (at most 20 s), then speaks again.
        while sink.played_samples() < 0.3 * max(sink.sample_rate_hz, 1) or not sink.sample_rate_hz:
            async for piece in paced(silence):
                yield piece
            waited += 1
            assert waited < 20_000 // CHUNK_MS, "the agent never started talking"
        injected.append(sink.played_samples())
        async for piece in paced(second + bytes(STT_SAMPLE_RATE_HZ * 2)):
            yield piece

    played_at_barge_in: list[int] = []

    def listener(event: ConversationEvent) -> None:
        if event.kind is EventKind.BARGE_IN:  # do not sit through the whole second reply in real time
            played_at_barge_in.append(sink.played_samples())
            sink.realtime = False

    async def scenario() -> tuple[list[TurnResult], list[tuple[str, str]]]:
        # preemptive=False: a retracted candidate of the second question would add its own
        # (known, see the next test) trace to the history; this test is about barge-in only.
        async with Conversation(
            addresses, sampling=GREEDY, max_tokens=400, sink=sink, listener=listener, preemptive=False
        ) as conversation:
            results = await conversation.run(microphone(), pace=True)
            return results, await history(addresses, conversation.session_id)

    results, messages = asyncio.run(asyncio.wait_for(scenario(), 150))
    for result in results:
        print(f"\n{result.transcript!r} -> heard {result.heard_reply!r}\n{waterfall(result)}")
    assert injected, "the second question was never spoken"
    assert len(results) == 2, [r.transcript for r in results]
    interrupted, answered = results
    assert {"recipe", "pancakes"} <= words(interrupted.transcript)
    assert interrupted.barge_in and not answered.barge_in
    assert "tts" in interrupted.cancelled_rpcs, interrupted.cancelled_rpcs
    assert "llm" in interrupted.cancelled_rpcs, "a 400-token reply is still being generated at barge-in"
    # Output stopped at the barge-in: the turn's audio is what had played by then (the user spoke
    # after hearing some of it), and nothing after. How soon the barge-in came is for `make bench`.
    samples = round(interrupted.audio_s * interrupted.sample_rate_hz)
    assert injected[0] <= samples == played_at_barge_in[0], (injected, samples, played_at_barge_in)
    heard = interrupted.heard_reply
    assert interrupted.reply.split()[: len(heard.split())] == heard.split(), "heard = the start of the reply"
    assert len(heard) < len(interrupted.reply)
    assert {"timer", "minutes"} <= words(answered.transcript)
    assert messages[:2] == [("user", interrupted.transcript), ("assistant", heard)]
    assert messages[2:] == [("user", answered.transcript), ("assistant", answered.reply)]


def held_at_the_pause(audio: bytes, hold: asyncio.Event, into_pause_ms: int = 400) -> AsyncIterator[bytes]:
    """`audio` at real-time pace, except that the "user" stays silent `into_pause_ms` into the first
    mid-sentence pause (digital silence in the fixture) until `hold` is set."""
    samples = memoryview(audio).cast("h")
    run = 0
    for i, sample in enumerate(samples):
        run = run + 1 if sample == 0 and i > 16 * FIXTURES["paused_moon.wav"]["speech_start_ms"] else 0
        if run == 16 * into_pause_ms:
            cut = 2 * (i + 1)
            break
    else:
        raise AssertionError("no pause in the fixture")
    chunk = STT_SAMPLE_RATE_HZ * 2 * CHUNK_MS // 1000

    async def source() -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        for part, then_wait in ((audio[:cut], True), (audio[cut:], False)):
            start = loop.time()
            for n, offset in enumerate(range(0, len(part), chunk)):
                await asyncio.sleep(max(0.0, start + n * CHUNK_MS / 1000 - loop.time()))  # real-time "mic"
                yield part[offset : offset + chunk]
            if then_wait:
                await asyncio.wait_for(hold.wait(), 30)

    return source()


def test_retracted_candidate_leaves_no_trace_in_the_history(addresses: ServiceAddresses) -> None:
    """A mid-sentence pause ("Can you tell me … how far away the moon is?") starts speculative
    work that is thrown away: the user is not cut off and the history holds only the real turn.
    The user holds the pause until the candidate arrives, so the speculation always happens."""
    discarded: list[str] = []
    candidate = asyncio.Event()

    def listener(event: ConversationEvent) -> None:
        if event.kind is EventKind.CANDIDATE:
            candidate.set()
        elif event.kind is EventKind.DISCARDED:
            discarded.append(event.text)

    async def scenario() -> tuple[list[TurnResult], list[tuple[str, str]]]:
        async with Conversation(
            addresses, sampling=GREEDY, max_tokens=40, listener=listener, sink=MemorySink(realtime=False)
        ) as conversation:
            mic = held_at_the_pause(pcm("paused_moon.wav"), candidate)
            results = await conversation.run(mic, pace=True)
            return results, await history(addresses, conversation.session_id)

    results, messages = asyncio.run(asyncio.wait_for(scenario(), 90))
    assert len(results) == 1, f"the pause cut the user off: {[r.transcript for r in results]}"
    assert {"moon", "far"} <= words(results[0].transcript)
    assert discarded, "the candidate at the pause started no speculative reply that was then thrown away"
    assert messages == [("user", results[0].transcript), ("assistant", results[0].reply)], messages
