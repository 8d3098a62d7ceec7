"""The streaming reply: LLM text deltas → StreamingSynthesize → audio queue → sink.

Three pumps per turn: every LLM delta goes into the TTS stream at once, every TTS audio chunk is
located in the reply (what was heard, on barge-in) and queued, and the player takes the queue to
the sink once the turn is confirmed and the previous reply has been played.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from orchestrator.audio import AudioSink
from orchestrator.clients import Clients
from orchestrator.config import Settings
from orchestrator.events import EventKind
from orchestrator.timing import Mark
from orchestrator.turn import Turn
from voice.llm.v1 import llm_pb2
from voice.tts.v1 import tts_pb2

_SENTENCE_END = re.compile(r"[.!?;:](\s|$)|\n")
Emit = Callable[[EventKind, str, int], None]


@dataclass(frozen=True)
class ReplyContext:
    """What a reply needs from its conversation."""

    clients: Clients
    sink: AudioSink
    settings: Settings
    emit: Emit
    # The conversation so far for a turn's Generate (orchestrator.history.ClientHistory.before).
    history: Callable[[Turn], list[llm_pb2.ChatMessage]] = lambda _turn: []


def start_playback(ctx: ReplyContext, turn: Turn, sample_rate_hz: int) -> None:
    """The first audio sample goes to the sink: dead air ends."""
    turn.sample_rate_hz = sample_rate_hz
    turn.mark(Mark.PLAYBACK_START)
    ctx.sink.begin(sample_rate_hz)
    turn.trace.playback_started()


def generate_request(
    settings: Settings, turn: Turn, *, with_turn_id: bool = True, history: Sequence[llm_pb2.ChatMessage] = ()
) -> llm_pb2.GenerateRequest:
    return llm_pb2.GenerateRequest(
        history=history,
        messages=[llm_pb2.ChatMessage(role="user", content=turn.transcript)],
        session_id=settings.session_id,
        max_tokens=settings.max_tokens,
        sampling=settings.sampling,
        turn_id=turn.turn_id if with_turn_id else "",
        score_end_of_turn=turn.on_end_of_turn is not None,
    )


async def speak_streaming(ctx: ReplyContext, turn: Turn) -> None:
    """Generate, synthesize and play the turn's reply; raises an error naming the failed service."""
    try:
        if turn.prev is not None:
            await turn.prev.llm_done.wait()  # history must hold the previous reply first
        metadata = turn.trace.metadata()
        request = generate_request(ctx.settings, turn, history=ctx.history(turn))
        generate = ctx.clients.llm.Generate(request, metadata=metadata)
        synthesize = ctx.clients.tts.StreamingSynthesize(metadata=metadata)
        turn.calls = {"llm": generate, "tts": synthesize}
        audio_q: asyncio.Queue[tuple[bytes, int] | None] = asyncio.Queue()
        tasks = [
            asyncio.create_task(_pump_llm(ctx, turn, generate, synthesize)),
            asyncio.create_task(_pump_tts(ctx, turn, synthesize, audio_q)),
            asyncio.create_task(_play(ctx, turn, audio_q)),
        ]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
    except grpc.RpcError as error:
        raise ctx.clients.error("llm" if not turn.llm_done.is_set() else "tts", error) from None
    finally:
        turn.llm_done.set()


async def _pump_llm(ctx: ReplyContext, turn: Turn, generate: Any, synthesize: Any) -> None:
    clients = ctx.clients
    try:
        if ctx.settings.voice:
            config = tts_pb2.SynthesisConfig(voice=ctx.settings.voice)
            await _write_tts(clients, synthesize, tts_pb2.StreamingSynthesizeRequest(config=config))
        while True:
            message = await generate.read()
            if message is grpc.aio.EOF:
                break
            if message.HasField("end_of_turn_probability"):
                turn.end_of_turn_probability = message.end_of_turn_probability
                if turn.on_end_of_turn is not None:
                    turn.on_end_of_turn(message.end_of_turn_probability)
            if message.text:
                now = time.perf_counter()
                turn.mark(Mark.FIRST_TOKEN, now)
                turn.spoken.parts.append(message.text)
                await _write_tts(clients, synthesize, tts_pb2.StreamingSynthesizeRequest(text=message.text))
                if _SENTENCE_END.search(turn.spoken.text):
                    turn.mark(Mark.FIRST_SENTENCE, now)
                if turn.confirmed.is_set():
                    ctx.emit(EventKind.REPLY_DELTA, message.text, turn.utterance_index)
            if message.HasField("final"):
                turn.spoken.summary = message.final
        turn.mark(Mark.LLM_DONE)
        turn.llm_done.set()
        if turn.spoken.text.strip():
            turn.mark(Mark.FIRST_SENTENCE, turn.timeline.at[Mark.LLM_DONE])  # a reply with no sentence end
    except grpc.RpcError as error:
        raise clients.error("llm", error) from None
    try:
        await synthesize.done_writing()
    except grpc.RpcError as error:
        raise clients.error("tts", error) from None
    except asyncio.InvalidStateError:
        raise await clients.ended_call_error("tts", synthesize) from None


async def _write_tts(clients: Clients, synthesize: Any, request: tts_pb2.StreamingSynthesizeRequest) -> None:
    try:
        await synthesize.write(request)
    except asyncio.InvalidStateError:
        # The TTS call already ended (e.g. its server died): report its status, naming the service.
        raise await clients.ended_call_error("tts", synthesize) from None


async def _pump_tts(
    ctx: ReplyContext, turn: Turn, synthesize: Any, audio_q: asyncio.Queue[tuple[bytes, int] | None]
) -> None:
    try:
        while True:
            message = await synthesize.read()
            if message is grpc.aio.EOF:
                break
            if not message.audio:
                continue
            turn.mark(Mark.FIRST_AUDIO)
            turn.spoken.add_audio(message)
            audio_q.put_nowait((message.audio, message.sample_rate_hz))
    except grpc.RpcError as error:
        raise ctx.clients.error("tts", error) from None
    finally:
        turn.spoken.audio_ended()
        audio_q.put_nowait(None)


async def _play(ctx: ReplyContext, turn: Turn, audio_q: asyncio.Queue[tuple[bytes, int] | None]) -> None:
    await turn.confirmed.wait()
    if turn.prev is not None:
        await turn.prev.done.wait()
    while True:
        item = await audio_q.get()
        if item is None:
            break
        pcm, rate = item
        if not turn.playing:
            start_playback(ctx, turn, rate)
        ctx.sink.write(pcm)
    if turn.playing:
        await ctx.sink.drain()
        turn.audio = ctx.sink.end()
    turn.mark(Mark.END)
