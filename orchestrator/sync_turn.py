"""The sync baseline (the seed's dumb pipe) on the same services: after the STT endpoint,
Recognize the utterance's audio, take the whole Generate reply, one Synthesize on it, then play."""

from __future__ import annotations

import time

import grpc

from orchestrator.audio import STT_SAMPLE_RATE_HZ
from orchestrator.events import EventKind
from orchestrator.reply import ReplyContext, generate_request, start_playback
from orchestrator.timing import Mark
from orchestrator.turn import Turn
from voice.stt.v1 import stt_pb2
from voice.tts.v1 import tts_pb2

# Audio before the utterance's start kept for Recognize (VAD start is a little late).
SYNC_LEAD_MS = 300


def utterance_span_ms(turn: Turn) -> tuple[int, int]:
    """Where the turn's utterance is in the run's audio (start with the lead), from its FINAL."""
    event = turn.final_event
    start_ms = max(0, turn.offset_ms + int(event.start_ms) - SYNC_LEAD_MS)
    end_ms = turn.offset_ms + max(int(event.audio_position_ms), int(event.end_ms))
    return start_ms, end_ms


async def speak_sync(ctx: ReplyContext, turn: Turn, clip: bytes) -> None:
    """Recognize `clip`, generate the whole reply, synthesize it whole, play it."""
    clients, settings = ctx.clients, ctx.settings
    kind = "stt"
    try:
        if turn.prev is not None:
            await turn.prev.done.wait()
        metadata = turn.trace.metadata()
        recognized = await clients.stt.Recognize(
            stt_pb2.RecognizeRequest(
                config=stt_pb2.RecognitionConfig(sample_rate_hz=STT_SAMPLE_RATE_HZ, language=settings.language),
                audio=clip,
            ),
            metadata=metadata,
        )
        turn.mark(Mark.STT_FINAL, attributes={"text": recognized.text}, again=True)  # the real transcript
        if recognized.text.strip():
            turn.transcript = recognized.text.strip()
        kind = "llm"
        request = generate_request(settings, turn, with_turn_id=False, history=ctx.history(turn))
        async for message in clients.llm.Generate(request, metadata=metadata):
            if message.text:
                turn.mark(Mark.FIRST_TOKEN)
                turn.spoken.parts.append(message.text)
            if message.HasField("final"):
                turn.spoken.summary = message.final
        done = time.perf_counter()
        turn.mark(Mark.LLM_DONE, done)
        turn.mark(Mark.FIRST_SENTENCE, done)
        turn.llm_done.set()
        ctx.emit(EventKind.REPLY_DELTA, turn.spoken.text, turn.utterance_index)
        kind = "tts"
        chunks: list[bytes] = []
        rate = 0
        if turn.spoken.text.strip():
            synthesize = tts_pb2.SynthesizeRequest(text=turn.spoken.text, voice=settings.voice)
            async for chunk in clients.tts.Synthesize(synthesize, metadata=metadata):
                if chunk.audio:
                    turn.mark(Mark.FIRST_AUDIO)
                    chunks.append(chunk.audio)
                    rate = chunk.sample_rate_hz
        if chunks:
            start_playback(ctx, turn, rate)
            for pcm in chunks:
                ctx.sink.write(pcm)
            await ctx.sink.drain()
            turn.audio = ctx.sink.end()
        turn.mark(Mark.END)
    except grpc.RpcError as error:
        raise clients.error(kind, error) from None
    finally:
        turn.llm_done.set()
