"""gRPC servicer for voice.stt.v1.SpeechToText: validate, drive the recognizer, map errors to status codes."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc

from service_runtime import Admission, EngineSlot
from service_runtime.telemetry import server_span
from service_runtime.worker import ModelWorker
from stt_service.clip import (
    ConfigFields,
    InvalidRequest,
    endpoint_config,
    recognize_clip,
    to_16k,
    validate_audio_format,
    validate_hint,
    validate_pcm,
)
from stt_service.endpointing import EndpointConfig
from stt_service.engine import SpeechEngine, UnsupportedLanguage
from stt_service.recognizer import Event, EventKind, StreamingRecognizer
from stt_service.vad import SileroVad
from voice.stt.v1 import stt_pb2, stt_pb2_grpc

log = logging.getLogger("stt-service")
SERVICE_NAME = stt_pb2.DESCRIPTOR.services_by_name["SpeechToText"].full_name
_BUSY = "all {cap} recognition sessions are busy (--max-sessions)"

_EVENT_TYPES = {
    EventKind.SPEECH_STARTED: stt_pb2.StreamingRecognizeResponse.SPEECH_STARTED,
    EventKind.INTERIM: stt_pb2.StreamingRecognizeResponse.INTERIM,
    EventKind.CANDIDATE_FINAL: stt_pb2.StreamingRecognizeResponse.CANDIDATE_FINAL,
    EventKind.CANDIDATE_RETRACTED: stt_pb2.StreamingRecognizeResponse.CANDIDATE_RETRACTED,
    EventKind.FINAL: stt_pb2.StreamingRecognizeResponse.FINAL,
}
_SPAN_EVENTS = {
    EventKind.SPEECH_STARTED: "speech_start",
    EventKind.CANDIDATE_FINAL: "candidate_final",
    EventKind.CANDIDATE_RETRACTED: "candidate_retracted",
}


@dataclass
class SttRuntime:
    engine: SpeechEngine
    vad: SileroVad
    worker: ModelWorker  # the one thread that runs every decode of the process


class SpeechToTextServicer(stt_pb2_grpc.SpeechToTextServicer):
    def __init__(
        self, slot: EngineSlot[SttRuntime], defaults: EndpointConfig, max_sessions: int, admission: Admission
    ) -> None:
        self._slot = slot
        self.defaults = defaults
        # Recognize calls and streams share one cap, enforced at the door by the server's interceptor.
        self.sessions = admission.gate(SERVICE_NAME, ["Recognize", "StreamingRecognize"], max_sessions, _BUSY)

    async def GetStats(self, request: stt_pb2.GetStatsRequest, context: grpc.aio.ServicerContext) -> Any:
        return stt_pb2.GetStatsResponse(
            active_sessions=self.sessions.active, max_sessions=self.sessions.cap, total_sessions=self.sessions.total
        )

    async def Recognize(self, request: stt_pb2.RecognizeRequest, context: grpc.aio.ServicerContext) -> Any:
        rt = await self._slot.get(context)
        started = time.perf_counter()
        with server_span("stt.recognize", context, rpc="Recognize") as span:
            try:
                cfg = ConfigFields.from_message(request.config)
                validate_audio_format(cfg)
                validate_pcm(request.audio)
                language = rt.engine.check_language(cfg.language)
            except (InvalidRequest, UnsupportedLanguage) as error:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
            audio_s = len(request.audio) / 2 / cfg.sample_rate_hz
            audio = await asyncio.to_thread(to_16k, request.audio, cfg.sample_rate_hz)
            result = await rt.worker.run(lambda: recognize_clip(rt.engine, rt.vad, audio, language))
            elapsed_ms = (time.perf_counter() - started) * 1000
            span.set_attribute("audio_s", round(audio_s, 3))
            span.set_attribute("rtf", round(result.decode_ms / 1000 / max(audio_s, 1e-3), 4))
            span.set_attribute("utterances", len(result.segments))
            if result.segments:
                span.set_attribute("speech_start_ms", int(result.segments[0].start_s * 1000))
                span.set_attribute("speech_end_ms", int(result.segments[-1].end_s * 1000))
            return stt_pb2.RecognizeResponse(
                text=result.text,
                segments=[
                    stt_pb2.RecognizedSegment(text=s.text, start_ms=int(s.start_s * 1000), end_ms=int(s.end_s * 1000))
                    for s in result.segments
                ],
                audio_duration_ms=int(audio_s * 1000),
                processing_ms=elapsed_ms,
            )

    async def StreamingRecognize(
        self, request_iterator: AsyncIterable[stt_pb2.StreamingRecognizeRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[stt_pb2.StreamingRecognizeResponse]:
        rt = await self._slot.get(context)
        recognizer: StreamingRecognizer | None = None
        reader: asyncio.Task[None] | None = None
        final_latencies: list[float] = []
        endpoint_silence_ms: int | None = None  # silence that ended the last utterance (0: ended by half-close)
        try:
            with server_span("stt.recognize", context, rpc="StreamingRecognize") as span:
                requests = aiter(request_iterator)
                first = await anext(requests, None)
                if first is None:
                    return  # empty stream: nothing to recognize, no error
                try:
                    if first.WhichOneof("request") != "config":
                        raise InvalidRequest(
                            "the first StreamingRecognizeRequest must carry `config` (sample_rate_hz, encoding); "
                            f"got {first.WhichOneof('request') or 'an empty message'}"
                        )
                    cfg = ConfigFields.from_message(first.config)
                    validate_audio_format(cfg)
                    language = rt.engine.check_language(cfg.language)
                    endpointing = endpoint_config(cfg, self.defaults)
                except (InvalidRequest, UnsupportedLanguage) as error:
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
                recognizer = StreamingRecognizer(
                    rt.engine, rt.worker, rt.vad, endpointing, language, cfg.sample_rate_hz
                )
                span.set_attribute("sample_rate_hz", cfg.sample_rate_hz)
                span.set_attribute("endpoint_ms", endpointing.endpoint_ms)
                span.set_attribute("min_endpoint_ms", endpointing.min_endpoint_ms)
                reader = asyncio.create_task(self._read(requests, recognizer))
                while True:
                    item = await recognizer.events.get()
                    if item is None:
                        break
                    if isinstance(item, InvalidRequest):
                        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(item))
                    if isinstance(item, BaseException):
                        log.error("recognition failed: %r", item)
                        await context.abort(grpc.StatusCode.INTERNAL, f"recognition failed: {item}")
                    assert isinstance(item, Event)
                    yield self._response(item)
                    if item.kind is EventKind.FINAL:
                        latency_ms = (time.perf_counter() - item.decided_at) * 1000
                        final_latencies.append(latency_ms)
                        endpoint_silence_ms = item.endpoint_ms
                        span.add_event(
                            "endpoint", {"utterance": item.utterance, "endpoint_silence_ms": item.endpoint_ms}
                        )
                        span.add_event(
                            "final",
                            {
                                "utterance": item.utterance,
                                "from_candidate": item.from_candidate,
                                "latency_ms": latency_ms,
                            },
                        )
                    elif item.kind in _SPAN_EVENTS:
                        span.add_event(
                            _SPAN_EVENTS[item.kind], {"utterance": item.utterance, "at_ms": item.position_ms}
                        )
                audio_s = recognizer.audio_s
                span.set_attribute("audio_s", round(audio_s, 3))
                span.set_attribute("rtf", round(recognizer.decode_ms / 1000 / max(audio_s, 1e-3), 4))
                span.set_attribute("utterances", recognizer.utterances)
                if recognizer.first_speech_ms is not None:
                    span.set_attribute("speech_start_ms", recognizer.first_speech_ms)
                if recognizer.last_speech_end_ms is not None:
                    span.set_attribute("speech_end_ms", recognizer.last_speech_end_ms)
                if final_latencies:
                    span.set_attribute("final_latency_ms", round(max(final_latencies), 2))
                if endpoint_silence_ms is not None:
                    span.set_attribute("endpoint_silence_ms", endpoint_silence_ms)
        finally:
            if reader is not None:
                reader.cancel()
            if recognizer is not None:
                recognizer.close()

    @staticmethod
    async def _read(
        requests: AsyncIterator[stt_pb2.StreamingRecognizeRequest], recognizer: StreamingRecognizer
    ) -> None:
        try:
            async for request in requests:
                kind = request.WhichOneof("request")
                if kind == "config":
                    raise InvalidRequest("`config` was sent twice; send it once, in the first message, then only audio")
                if kind == "end_of_turn":
                    hint = request.end_of_turn
                    validate_hint(hint.text, hint.probability, recognizer.config.hints)
                    recognizer.hint(hint.text, hint.probability)
                    continue
                if kind != "audio":
                    raise InvalidRequest(
                        "a StreamingRecognizeRequest after the first must carry `audio` (or `end_of_turn`)"
                    )
                validate_pcm(request.audio, "audio chunk")
                await recognizer.feed(request.audio)
            await recognizer.finish()
        except asyncio.CancelledError:
            raise
        except Exception as error:  # handed to the response loop, which maps it to a status
            recognizer.events.put_nowait(error)

    @staticmethod
    def _response(event: Event) -> stt_pb2.StreamingRecognizeResponse:
        return stt_pb2.StreamingRecognizeResponse(
            event=_EVENT_TYPES[event.kind],
            text=event.text,
            is_final=event.kind is EventKind.FINAL,
            utterance_index=event.utterance,
            start_ms=event.start_ms,
            end_ms=event.end_ms,
            audio_position_ms=event.position_ms,
            decode_ms=event.decode_ms,
            from_candidate=event.from_candidate,
            endpoint_silence_ms=event.endpoint_ms,
        )
