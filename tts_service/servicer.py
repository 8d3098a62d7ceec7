"""gRPC servicer for voice.tts.v1.TextToSpeech: validate, segment, queue on the voice, stream PCM.

Pipeline per stream: segments (from the whole text, or from fragments as they arrive) →
producer task (one sentence at a time on the voice's worker, at most `AUDIO_QUEUE` sentences
ahead) → the RPC writes chunks, awaiting each write. A slow reader therefore stops synthesis
instead of growing buffers, and a cancelled stream drops its queued sentences at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from opentelemetry.trace import Span, Status, StatusCode

from service_runtime import Admission, EngineSlot, telemetry
from tts_service.engine import LoadedVoice, SynthesisResult, TtsEngine, TtsError
from tts_service.segmenter import Segment, SentenceSegmenter
from voice.tts.v1 import tts_pb2, tts_pb2_grpc

log = logging.getLogger("tts-service")

SERVICE_NAME = tts_pb2.DESCRIPTOR.services_by_name["TextToSpeech"].full_name
_BUSY = "too many synthesis streams: {active} active, limit --max-streams={cap}"
AUDIO_QUEUE = 2  # synthesized sentences waiting for the RPC to write them


@dataclass(frozen=True)
class Limits:
    max_streams: int = 4
    max_text_chars: int = 5000
    chunk_ms: int = 1000
    first_clause_chars: int = 20
    first_phrase_words: int = 4
    long_clause_chars: int = 150
    max_segment_chars: int = 300


# Items flowing from text intake to the producer: a completed segment with the moment it
# became complete, or None for end of input.
_SegItem = tuple[Segment, float] | None


class RpcAbort(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


_DONE = object()
Emit = Callable[[tts_pb2.SynthesizeResponse], Awaitable[None]]


class TtsServicer(tts_pb2_grpc.TextToSpeechServicer):
    def __init__(self, slot: EngineSlot[TtsEngine], limits: Limits, admission: Admission) -> None:
        self.slot = slot
        self.limits = limits
        # Both synthesis RPCs share one cap, enforced at the door by the server's interceptor.
        self.streams = admission.gate(SERVICE_NAME, ["Synthesize", "StreamingSynthesize"], limits.max_streams, _BUSY)

    # ---- helpers -------------------------------------------------------------------------

    def _segmenter(self) -> SentenceSegmenter:
        return SentenceSegmenter(
            self.limits.first_clause_chars,
            self.limits.long_clause_chars,
            self.limits.max_segment_chars,
            self.limits.first_phrase_words,
        )

    def _too_long(self, chars: int) -> TtsError:
        return TtsError(f"text is {chars} characters; the limit is --max-text-chars={self.limits.max_text_chars}")

    async def _serve(
        self,
        context: grpc.aio.ServicerContext,
        attributes: dict[str, Any],
        body: Callable[[Span, Emit], Awaitable[None]],
    ) -> None:
        """Run `body` in its own task inside the RPC span; write what it emits, awaiting each write.

        The span lives entirely in that task (no span context held across this generator's
        yields), and whatever ends the RPC early (client cancel, failed write, shutdown)
        cancels the task at once: queued sentences are dropped and the stream is freed.
        """
        out: asyncio.Queue[Any] = asyncio.Queue(1)

        async def run() -> None:
            result: object = _DONE
            with telemetry.server_span("tts.synthesize", context, **attributes) as span:
                try:
                    await body(span, out.put)
                except asyncio.CancelledError:
                    span.add_event("cancelled")
                    raise
                except TtsError as error:
                    result = RpcAbort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
                except RpcAbort as error:
                    result = error
                except Exception as error:
                    log.exception("synthesis failed")
                    result = RpcAbort(grpc.StatusCode.INTERNAL, f"synthesis failed: {error}")
                if isinstance(result, RpcAbort):
                    span.set_status(Status(StatusCode.ERROR, result.details))
                    span.set_attribute("grpc.status", result.code.name)
            await out.put(result)

        task = asyncio.create_task(run())
        try:
            while True:
                item = await out.get()
                if item is _DONE:
                    return
                if isinstance(item, RpcAbort):
                    await context.abort(item.code, item.details)
                try:
                    await context.write(item)
                except Exception:  # the client went away (cancel, deadline): stop at once
                    log.debug("write failed; stream ended by the client")
                    return
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _synthesize_segments(
        self,
        voice: LoadedVoice,
        rate: int,
        segments: asyncio.Queue[_SegItem],
        span: Span,
        t_start: list[float],
        emit: Emit,
    ) -> None:
        """Synthesize queued segments in order (at most AUDIO_QUEUE ahead), emit their audio in chunks.

        `t_start[0]` is when the request's clock starts (request / first text), for ttfa_ms.
        """
        audio_q: asyncio.Queue[tuple[Segment, SynthesisResult] | None] = asyncio.Queue(AUDIO_QUEUE)
        tracer = telemetry.tracer("voice")

        async def produce() -> None:
            while True:
                item = await segments.get()
                if item is None:
                    await audio_q.put(None)
                    return
                segment, t_complete = item
                with tracer.start_as_current_span(
                    "tts.sentence", attributes={"sentence_index": segment.index, "text_chars": len(segment.text)}
                ) as sspan:
                    result = await voice.synthesize(segment.text, rate, segment.continues)
                    sspan.set_attribute("ttfa_ms", round((time.perf_counter() - t_complete) * 1000, 1))
                    sspan.set_attribute("audio_s", round(result.audio_s, 3))
                    sspan.set_attribute("spoken_chars", len(result.spoken_text))
                    if result.audio_s:
                        sspan.set_attribute("rtf", round(result.synth_s / result.audio_s, 4))
                await audio_q.put((segment, result))

        producer = asyncio.create_task(produce())
        sentences = 0
        audio_s = 0.0
        first = True
        try:
            while True:
                got = await audio_q.get()
                if got is None:
                    break
                segment, result = got
                sentences += 1
                if not result.pcm:
                    continue
                audio_s += result.audio_s
                pcm = result.pcm
                chunk_bytes = max(2, int(result.sample_rate_hz * self.limits.chunk_ms / 1000) * 2)
                for offset in range(0, len(pcm), chunk_bytes):
                    if first:
                        first = False
                        span.add_event("first_audio")
                        span.set_attribute("ttfa_ms", round((time.perf_counter() - t_start[0]) * 1000, 1))
                    await emit(
                        tts_pb2.SynthesizeResponse(
                            audio=pcm[offset : offset + chunk_bytes],
                            sample_rate_hz=result.sample_rate_hz,
                            text=segment.text,
                            sentence_index=segment.index,
                            sentence_end=offset + chunk_bytes >= len(pcm),
                            text_start_char=segment.start,
                            text_end_char=segment.end,
                            spoken_text=result.spoken_text,
                        )
                    )
        finally:
            span.set_attribute("sentences", sentences)
            span.set_attribute("audio_s", round(audio_s, 3))
            producer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await producer

    # ---- RPCs ----------------------------------------------------------------------------

    async def Synthesize(self, request: tts_pb2.SynthesizeRequest, context: grpc.aio.ServicerContext) -> None:
        t_start = [time.perf_counter()]
        engine = await self.slot.get(context)

        async def body(span: Span, emit: Emit) -> None:
            voice = engine.voice(request.voice)
            engine.check_rate(request.sample_rate_hz)
            if len(request.text) > self.limits.max_text_chars:
                raise self._too_long(len(request.text))
            span.set_attribute("voice", voice.info.name)
            segmenter = self._segmenter()
            queue: asyncio.Queue[_SegItem] = asyncio.Queue()
            now = time.perf_counter()
            for segment in segmenter.push(request.text) + segmenter.finish():
                queue.put_nowait((segment, now))
            queue.put_nowait(None)
            await self._synthesize_segments(voice, request.sample_rate_hz, queue, span, t_start, emit)

        await self._serve(context, {"rpc": "Synthesize", "text_chars": len(request.text)}, body)

    async def StreamingSynthesize(
        self, request_iterator: AsyncIterator[tts_pb2.StreamingSynthesizeRequest], context: grpc.aio.ServicerContext
    ) -> None:
        t_start = [time.perf_counter()]
        engine = await self.slot.get(context)

        async def body(span: Span, emit: Emit) -> None:
            requests = request_iterator.__aiter__()
            first = await anext(requests, None)
            config = tts_pb2.SynthesisConfig()
            pending_text: str | None = None
            if first is not None:
                if first.WhichOneof("request") == "config":
                    config = first.config
                else:
                    pending_text = first.text
            voice = engine.voice(config.voice)
            engine.check_rate(config.sample_rate_hz)
            span.set_attribute("voice", voice.info.name)
            queue: asyncio.Queue[_SegItem] = asyncio.Queue()
            segmenter = self._segmenter()
            got_text = False

            def feed(text: str) -> None:
                nonlocal got_text
                if not got_text:
                    got_text = True
                    t_start[0] = time.perf_counter()  # ttfa counts from the first text
                    span.add_event("first_text")
                now = time.perf_counter()
                for segment in segmenter.push(text):
                    queue.put_nowait((segment, now))

            async def intake() -> None:
                if pending_text is not None:
                    feed(pending_text)
                async for req in requests:
                    kind = req.WhichOneof("request")
                    if kind == "config":
                        where = "after text" if got_text else "twice"
                        raise TtsError(f"config sent {where}; send at most one config, as the first message")
                    if kind == "text":
                        if segmenter.total_chars + len(req.text) > self.limits.max_text_chars:
                            raise self._too_long(segmenter.total_chars + len(req.text))
                        feed(req.text)
                now = time.perf_counter()
                for segment in segmenter.finish():
                    queue.put_nowait((segment, now))
                span.set_attribute("text_chars", segmenter.total_chars)
                queue.put_nowait(None)

            reader = asyncio.create_task(intake())
            synth = asyncio.create_task(
                self._synthesize_segments(voice, config.sample_rate_hz, queue, span, t_start, emit)
            )
            try:
                # A bad request message ends the stream at once, not after the queued audio.
                await asyncio.wait({reader, synth}, return_when=asyncio.FIRST_EXCEPTION)
                if reader.done() and reader.exception() is not None:
                    raise reader.exception()  # type: ignore[misc]
                await synth
            finally:
                for task in (reader, synth):
                    task.cancel()
                await asyncio.gather(reader, synth, return_exceptions=True)

        await self._serve(context, {"rpc": "StreamingSynthesize"}, body)

    async def ListVoices(
        self, request: tts_pb2.ListVoicesRequest, context: grpc.aio.ServicerContext
    ) -> tts_pb2.ListVoicesResponse:
        engine = await self.slot.get(context)
        return tts_pb2.ListVoicesResponse(
            voices=[
                tts_pb2.Voice(
                    name=v.info.name,
                    language=v.info.language,
                    sample_rate_hz=v.info.sample_rate_hz,
                    backend=v.info.backend.value,
                    is_default=v is engine.default,
                )
                for v in engine.voices.values()
            ]
        )

    async def GetStats(
        self, request: tts_pb2.GetStatsRequest, context: grpc.aio.ServicerContext
    ) -> tts_pb2.GetStatsResponse:
        return tts_pb2.GetStatsResponse(
            active_streams=self.streams.active, max_streams=self.streams.cap, total_streams=self.streams.total
        )
