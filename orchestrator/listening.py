"""Listening: the run's audio input, its send clock, and one StreamingRecognize stream per turn.

Listening for a turn opens the turn's root span and its own STT stream, which gets the run's
audio from the stream's offset on. The turn's first non-empty FINAL switches streams: the old one
is half-closed (drained, its events ignored) and the next turn's stream starts where the STT
decided the FINAL, so the user is heard (and can barge in) while the agent replies.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
from collections.abc import AsyncIterator
from typing import Any, TypeAlias

import grpc
from opentelemetry import trace
from opentelemetry.trace import Span

from orchestrator import tracing
from orchestrator.audio import BYTES_PER_SAMPLE, STT_SAMPLE_RATE_HZ
from orchestrator.clients import Clients
from orchestrator.config import Settings
from orchestrator.events import ConversationEvent, EventKind
from voice.stt.v1 import stt_pb2

log = logging.getLogger("orchestrator")

CHUNK_MS = 20
# With end-of-turn hints the candidate (speculative reply + LLM score) comes after this much silence:
# the first pause the STT's VAD can see (one 32 ms frame). Side by side with 100 ms (bench
# --compare-candidate 32, 50 paired turns): first token -66 ms, dead air -55 ms (median of pairs),
# speculative LLM tokens discarded 6.1 -> 6.7 %; a FINAL still needs its full endpoint.
HINTED_CANDIDATE_MS = 32
BYTES_PER_MS = STT_SAMPLE_RATE_HZ * BYTES_PER_SAMPLE // 1000
SttEvent: TypeAlias = stt_pb2.StreamingRecognizeResponse


class SendClock:
    """When each part of the audio stream was sent: maps stream positions (ms) to perf_counter time."""

    def __init__(self, paced: bool) -> None:
        self.paced = paced
        self._ends_ms: list[float] = []
        self._times: list[float] = []

    def record(self, end_ms: float, t: float) -> None:
        self._ends_ms.append(end_ms)
        self._times.append(t)

    def time_of(self, ms: float) -> float:
        if not self._ends_ms:
            return time.perf_counter()
        i = min(bisect.bisect_left(self._ends_ms, ms), len(self._ends_ms) - 1)
        t = self._times[i]
        # Paced: a chunk is sent when its last sample is "recorded", so earlier samples were spoken earlier.
        return t - max(0.0, self._ends_ms[i] - ms) / 1000.0 if self.paced else t


class SttStream:
    """Listening for one turn: one StreamingRecognize stream whose server span is a child of `root`."""

    def __init__(self, seq: int, offset_ms: int, root: Span, call: Any) -> None:
        self.seq = seq
        self.offset_ms = offset_ms
        self.root = root
        self.call = call
        self.sent = offset_ms * BYTES_PER_MS  # bytes of the run's audio sent
        self.answered = False  # a reply started in this turn (its turn ends `root`)
        self.switched = False
        self.eof = False
        self.tasks: list[asyncio.Task[None]] = []
        self.hints: list[stt_pb2.EndOfTurnHint] = []  # to send before the next audio


class Listening:
    """The run's audio and its STT streams; `next_event()` yields the active stream's events."""

    def __init__(
        self,
        clients: Clients,
        tracer: trace.Tracer,
        config: stt_pb2.RecognitionConfig,
        *,
        mode: str,
        session_id: str,
        paced: bool,
        speech_end_hint_ms: int | None = None,
    ) -> None:
        self._clients = clients
        self._tracer = tracer
        self._config = config
        self._mode = mode
        self._session_id = session_id
        self.clock = SendClock(paced=paced)
        self.speech_end_hint_ms = speech_end_hint_ms
        self.audio = bytearray()
        self.active: SttStream | None = None  # the stream audio goes to (None: input over)
        self.streams: list[SttStream] = []
        self.input_done = False
        self._inbox: asyncio.Queue[tuple[SttStream | None, Any]] = asyncio.Queue()
        self._wake = asyncio.Event()  # replaced on every change a stream writer waits for
        self._pump: asyncio.Task[None] | None = None

    @property
    def finished(self) -> bool:
        """The input is over and every stream has ended."""
        return self.input_done and all(s.eof for s in self.streams)

    def start(self, source: AsyncIterator[bytes]) -> None:
        self._open(0)
        self._pump = asyncio.create_task(self._pump_source(source))

    def wake(self, error: BaseException | None = None) -> None:
        """Wake `next_event()` (it raises `error` when given)."""
        self._inbox.put_nowait((None, error))

    async def next_event(self) -> tuple[SttStream, SttEvent] | None:
        """The next event of the active stream; None when something else happened (check again)."""
        stream, item = await self._inbox.get()
        if stream is None:  # input over, a woken loop, or the source failed
            if isinstance(item, BaseException):
                raise item
            return None
        if item is None:  # this stream is over
            stream.eof = True
            if stream is self.active and not self.input_done:
                log.warning("the STT stream ended before the input; ending the run")
                if self._pump is not None:
                    self._pump.cancel()
                self.active = None
                self.input_done = True
            return None
        if isinstance(item, BaseException):
            if stream.switched:  # draining a finished turn's stream: nothing depends on it
                log.warning("STT stream of a finished turn failed: %s", item)
                return None
            raise item
        return (stream, item) if stream is self.active else None  # a switched-out stream's events are ignored

    def switch(self, stream: SttStream, event: SttEvent) -> None:
        """The turn's FINAL: half-close its stream, send what follows the FINAL to the next turn's stream.

        The next stream starts where the STT decided the FINAL (its `audio_position_ms`): audio the
        old stream got after that point (sent before the switch) is sent again, so nothing is lost.
        """
        stream.switched = True
        resume_ms = min(stream.offset_ms + int(event.audio_position_ms), stream.sent // BYTES_PER_MS)
        self.active = None
        if not self.input_done or resume_ms * BYTES_PER_MS < len(self.audio):
            self._open(resume_ms)
        self._wake_writers()  # the old stream's writer half-closes it

    def hint(self, stream: SttStream, text: str, probability: float) -> None:
        """Send the STT an end-of-turn hint for `text` on `stream` (if it still listens)."""
        if stream is self.active:
            stream.hints.append(stt_pb2.EndOfTurnHint(text=text, probability=probability))
            self._wake_writers()

    def speech_end_t(self, offset_ms: int, event: SttEvent) -> float:
        """perf_counter time of the end of the user's speech (event positions are the stream's)."""
        hint = self.speech_end_hint_ms
        if hint is not None and offset_ms + event.start_ms <= hint <= offset_ms + max(
            event.audio_position_ms, event.end_ms
        ):
            return self.clock.time_of(hint)
        return self.clock.time_of(offset_ms + event.end_ms)

    def clip(self, start_ms: int, end_ms: int) -> bytes:
        """The run's audio between two positions."""
        return bytes(self.audio[start_ms * BYTES_PER_MS : end_ms * BYTES_PER_MS])

    def close(self) -> None:
        """Stop the input and every stream; listening that heard no turn ends as an empty `listen` span."""
        if self._pump is not None:
            self._pump.cancel()
        self.active = None
        for stream in self.streams:
            for task in stream.tasks:
                task.cancel()
            stream.call.cancel()
            if not stream.answered:
                tracing.end_unanswered(stream.root)
        self.streams = []

    def _open(self, offset_ms: int) -> SttStream:
        """Start listening for the next turn: its root span and its STT stream from `offset_ms` on."""
        root = tracing.start_listening(self._tracer, self._mode, self._session_id)
        call = self._clients.stt.StreamingRecognize(metadata=tracing.metadata(root))
        stream = SttStream(len(self.streams) + 1, offset_ms, root, call)
        self.active = stream
        self.streams.append(stream)
        stream.tasks = [asyncio.create_task(self._write(stream)), asyncio.create_task(self._read(stream))]
        return stream

    def _wake_writers(self) -> None:
        wake, self._wake = self._wake, asyncio.Event()
        wake.set()

    async def _pump_source(self, source: AsyncIterator[bytes]) -> None:
        """Audio from the source into the run's buffer (stream writers send it from there)."""
        try:
            position = 0
            async for chunk in source:
                if not chunk:
                    continue
                self.audio += chunk
                position += len(chunk) // BYTES_PER_SAMPLE
                self.clock.record(position * 1000.0 / STT_SAMPLE_RATE_HZ, time.perf_counter())
                self._wake_writers()
        except asyncio.CancelledError:
            raise
        except Exception as error:
            self.wake(error)
        finally:
            self.input_done = True
            self._wake_writers()
            self.wake()

    async def _write(self, stream: SttStream) -> None:
        """Config, then the run's audio from the stream's offset, until switched out or the input ends."""
        piece = BYTES_PER_MS * CHUNK_MS
        try:
            await stream.call.write(stt_pb2.StreamingRecognizeRequest(config=self._config))
            while self.active is stream:
                if stream.hints:
                    await stream.call.write(stt_pb2.StreamingRecognizeRequest(end_of_turn=stream.hints.pop(0)))
                    continue
                if stream.sent < len(self.audio):
                    end = min(len(self.audio), stream.sent + piece)
                    await stream.call.write(
                        stt_pb2.StreamingRecognizeRequest(audio=bytes(self.audio[stream.sent : end]))
                    )
                    stream.sent = end
                    continue
                if self.input_done:
                    break
                await self._wake.wait()
            await stream.call.done_writing()
        except grpc.RpcError as error:
            self._inbox.put_nowait((stream, self._clients.error("stt", error)))
        except asyncio.InvalidStateError:
            pass  # the call already ended (the reader reports why)

    async def _read(self, stream: SttStream) -> None:
        try:
            while True:
                response = await stream.call.read()
                if response is grpc.aio.EOF:
                    break
                self._inbox.put_nowait((stream, response))
        except grpc.RpcError as error:
            self._inbox.put_nowait((stream, self._clients.error("stt", error)))
        finally:
            self._inbox.put_nowait((stream, None))


_UI_EVENTS = {
    SttEvent.SPEECH_STARTED: EventKind.SPEECH_STARTED,
    SttEvent.INTERIM: EventKind.INTERIM,
    SttEvent.CANDIDATE_FINAL: EventKind.CANDIDATE,
    SttEvent.CANDIDATE_RETRACTED: EventKind.RETRACTED,
    SttEvent.FINAL: EventKind.FINAL,
}


def ui_event_of(event: SttEvent) -> ConversationEvent | None:
    """What the user sees of an STT event (a FINAL's text stripped: empty means noise)."""
    kind = _UI_EVENTS.get(event.event)
    if kind is None:
        return None
    text = "" if kind is EventKind.SPEECH_STARTED else event.text.strip() if kind is EventKind.FINAL else event.text
    return ConversationEvent(kind, text, event.utterance_index)


def recognition_config(settings: Settings) -> stt_pb2.RecognitionConfig:
    """The first message of every turn's stream: 16 kHz LINEAR16, interim results, the endpoint settings."""
    config = stt_pb2.RecognitionConfig(
        sample_rate_hz=STT_SAMPLE_RATE_HZ,
        encoding=stt_pb2.LINEAR16,
        language=settings.language,
        interim_results=True,
        endpoint_silence_ms=settings.endpoint_silence_ms,
        candidate_silence_ms=settings.candidate_silence_ms,
    )
    if settings.min_endpoint_silence_ms and "min_endpoint_silence_ms" in config.DESCRIPTOR.fields_by_name:
        setattr(config, "min_endpoint_silence_ms", settings.min_endpoint_silence_ms)  # noqa: B010 - newer contract
    if settings.mode == "streaming" and settings.end_of_turn_hints:
        config.end_of_turn_hints = True
        config.candidate_silence_ms = settings.candidate_silence_ms or HINTED_CANDIDATE_MS
    return config


async def pcm_source(pcm: bytes, pace: bool, chunk_ms: int = CHUNK_MS) -> AsyncIterator[bytes]:
    """Chunks of `pcm` (16 kHz s16le), at real-time pace on an absolute schedule when `pace`."""
    step = BYTES_PER_MS * chunk_ms
    loop = asyncio.get_running_loop()
    start = loop.time()
    for i, offset in enumerate(range(0, len(pcm), step)):
        if pace:
            delay = start + (i + 1) * chunk_ms / 1000.0 - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)  # real-time pacing of the "microphone"
        else:
            await asyncio.sleep(0)
        yield pcm[offset : offset + step]
