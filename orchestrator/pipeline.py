"""The conversation loop: STT stream → LLM tokens → TTS audio → sink, with preemption and barge-in.

Each conversational turn is one trace: listening for it opens the root span `turn` and one
`StreamingRecognize` stream carrying that span's trace context; its first non-empty FINAL starts the
reply, half-closes that stream and opens the next turn's stream (new root span) at once, so the user
can be heard (and barge in) while the agent talks. In streaming mode every LLM
text delta goes into `StreamingSynthesize` at once and every audio chunk goes to the sink as it
arrives. With `preemptive`, a CANDIDATE_FINAL starts the same work early with the audio held
until the FINAL confirms the text; a retraction (or a different FINAL) throws that work away.
With `barge_in`, SPEECH_STARTED while the agent talks stops playback, cancels the LLM and TTS
calls and tells the LLM what the user actually heard. Sync mode is the seed's dumb pipe on the
same services: whole transcript, whole reply, whole audio, then play.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

import grpc
from opentelemetry import trace
from opentelemetry.trace import Span

from orchestrator.audio import (
    BYTES_PER_SAMPLE,
    STT_SAMPLE_RATE_HZ,
    AudioSink,
    MemorySink,
    PlayoutSink,
    resample_pcm16,
)
from orchestrator.clients import Clients, check_services
from orchestrator.config import ServiceAddresses
from orchestrator.events import ConversationEvent, EventKind, Listener, notify
from orchestrator.timing import TurnResult
from service_runtime import telemetry
from voice.llm.v1 import llm_pb2
from voice.stt.v1 import stt_pb2
from voice.tts.v1 import tts_pb2

log = logging.getLogger("orchestrator")

Mode = Literal["streaming", "sync"]
Event = stt_pb2.StreamingRecognizeResponse
_SENTENCE_END = re.compile(r"[.!?;:](\s|$)|\n")
CHUNK_MS = 20
# Sync mode: audio before the utterance's start kept for Recognize (VAD start is a little late).
SYNC_LEAD_MS = 300


class _SendClock:
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


@dataclass
class _Unit:
    """A sentence/clause of the reply as the TTS spoke it, located in the reply's audio."""

    text: str
    offset: int  # first sample within the reply's audio
    samples: int = 0
    complete: bool = False


def heard_text(units: list[_Unit], played_samples: int) -> str:
    """Units fully played, plus the played fraction of the current unit's words."""
    parts: list[str] = []
    for unit in units:
        if played_samples >= unit.offset + unit.samples and unit.complete:
            parts.append(unit.text.strip())
            continue
        if played_samples > unit.offset and unit.samples:
            words = unit.text.split()
            fraction = min(1.0, (played_samples - unit.offset) / unit.samples)
            heard_words = int(fraction * len(words))
            if heard_words:
                parts.append(" ".join(words[:heard_words]))
        break
    return " ".join(p for p in parts if p)


def _normalize(text: str) -> str:
    return " ".join(text.lower().split())


def _wall_ns(perf_t: float) -> int:
    return time.time_ns() - int((time.perf_counter() - perf_t) * 1e9)


class _Turn:
    def __init__(self, seq: int, transcript: str, utterance_index: int, speculative: bool, prev: _Turn | None) -> None:
        self.seq = seq
        self.transcript = transcript
        self.utterance_index = utterance_index
        self.speculative = speculative
        self.turn_id = f"{seq}-{uuid.uuid4().hex[:8]}"  # GenerateRequest.turn_id: DiscardTurn removes it
        self.prev = prev
        self.span: Span = trace.INVALID_SPAN
        self.playback_span: Span | None = None
        self.task: asyncio.Task[None] | None = None
        self.calls: dict[str, Any] = {}
        self.confirmed = asyncio.Event()
        self.llm_done = asyncio.Event()  # the Generate call is over (or will never run)
        self.done = asyncio.Event()  # the turn is over: played, barged in or discarded
        self.audio_q: asyncio.Queue[tuple[bytes, int] | None] = asyncio.Queue()
        self.reply_parts: list[str] = []
        self.units: dict[tuple[int, int, int], _Unit] = {}
        self.unit_order: list[_Unit] = []
        self.received_samples = 0
        self.sample_rate_hz = 0
        self.summary: llm_pb2.GenerationSummary | None = None
        self.generation_complete = False
        self.playing = False
        self.audio = b""
        self.heard: str | None = None
        self.barge_in = False
        self.preemptive_used = False
        self.cancelled_rpcs: list[str] = []
        self.speech_end_t = 0.0
        self.t_final: float | None = None
        self.t_first_token: float | None = None
        self.t_first_sentence: float | None = None
        self.t_llm_done: float | None = None
        self.t_first_audio: float | None = None
        self.t_playback_start: float | None = None
        self.t_end: float | None = None
        self.final_event: Any = None
        self.root: Span = trace.INVALID_SPAN  # the turn's root span (its listening's); `span` once confirmed
        self.offset_ms = 0  # where the STT stream of this turn starts in the run's audio
        self.spec_span: Span | None = None  # a confirmed speculative attempt's own span

    @property
    def reply(self) -> str:
        return "".join(self.reply_parts)


class _Listen:
    """Listening for one turn: one StreamingRecognize stream whose server span is a child of `root`.

    The stream gets the run's audio from `offset_ms` on; after its first non-empty FINAL it is
    switched out (half-closed, drained, its events ignored) and the next turn's stream takes over.
    """

    def __init__(self, seq: int, offset_ms: int, root: Span, call: Any) -> None:
        self.seq = seq
        self.offset_ms = offset_ms
        self.root = root
        self.call = call
        self.sent = offset_ms * STT_SAMPLE_RATE_HZ * BYTES_PER_SAMPLE // 1000  # bytes of the run's audio sent
        self.owner: _Turn | None = None  # the turn whose reply this listening started (ends `root`)
        self.switched = False
        self.eof = False
        self.tasks: list[asyncio.Task[None]] = []


class Conversation:
    """A spoken conversation with the agent through the three services.

    `sink` receives the agent's audio (default: an in-memory sink that plays in simulated real time).
    """

    def __init__(
        self,
        addresses: ServiceAddresses,
        *,
        mode: Mode = "streaming",
        session_id: str | None = None,
        barge_in: bool = True,
        preemptive: bool = True,
        sink: AudioSink | None = None,
        language: str = "",
        endpoint_silence_ms: int = 0,
        candidate_silence_ms: int = 0,
        min_endpoint_silence_ms: int = 0,
        voice: str = "",
        max_tokens: int = 0,
        sampling: llm_pb2.SamplingOptions | None = None,
        listener: Listener | None = None,
    ) -> None:
        if mode not in ("streaming", "sync"):
            raise ValueError(f"mode must be 'streaming' or 'sync', not {mode!r}")
        self.addresses = addresses
        self.mode: Mode = mode
        self.session_id = session_id or f"conv-{uuid.uuid4().hex[:12]}"
        self.barge_in = barge_in
        self.preemptive = preemptive
        self.sink: AudioSink = sink if sink is not None else MemorySink()
        self.language = language
        self.endpoint_silence_ms = endpoint_silence_ms
        self.candidate_silence_ms = candidate_silence_ms
        self.min_endpoint_silence_ms = min_endpoint_silence_ms
        self.voice = voice
        self.max_tokens = max_tokens
        self.sampling = sampling
        self.listener = listener
        self.results: list[TurnResult] = []
        telemetry.setup_tracing("orchestrator")
        self._tracer = telemetry.tracer("orchestrator")
        self._clients = Clients(addresses)
        self._seq = 0
        self._current: _Turn | None = None
        self._spec: _Turn | None = None
        self._turns: list[_Turn] = []
        self._run_results: list[TurnResult] = []
        self._clock = _SendClock(paced=True)
        self._audio = bytearray()
        self._speech_end_hint_ms: int | None = None
        self._barge_in_active = barge_in
        self._preemptive_active = preemptive
        self._failure: BaseException | None = None
        self._listen: _Listen | None = None  # the stream audio goes to (None: input over)
        self._listens: list[_Listen] = []
        self._inbox: asyncio.Queue[tuple[_Listen | None, Any]] = asyncio.Queue()
        self._wake = asyncio.Event()  # replaced on every change a stream writer waits for
        self._input_done = False
        self._stt_config = stt_pb2.RecognitionConfig()

    # ----------------------------------------------------------------- set-up

    async def check_services(self, timeout_s: float = 2.0) -> None:
        """Raise ServiceDownError naming the first service that is not SERVING."""
        await check_services(self.addresses, timeout_s)

    def _service_error(self, kind: str, error: grpc.RpcError) -> Exception:
        return self._clients.error(kind, error)

    def _emit(
        self, kind: EventKind, text: str = "", utterance_index: int = 0, result: TurnResult | None = None
    ) -> None:
        notify(self.listener, ConversationEvent(kind, text, utterance_index, result))

    # ----------------------------------------------------------------- running

    async def run_file(
        self, pcm: bytes, sample_rate_hz: int, *, pace: bool = True, speech_end_ms: int | None = None
    ) -> list[TurnResult]:
        """Stream 16-bit mono PCM into the conversation (at real-time pace unless `pace=False`).

        Returns one TurnResult per non-empty STT FINAL, after every reply has been played.
        `speech_end_ms` (position in `pcm`) overrides the STT's end of speech for dead-air timing.
        """
        audio = resample_pcm16(pcm, sample_rate_hz, STT_SAMPLE_RATE_HZ)
        return await self.run(_pcm_source(audio, pace), pace=pace, speech_end_ms=speech_end_ms)

    async def run(
        self, source: AsyncIterator[bytes], *, pace: bool = True, speech_end_ms: int | None = None
    ) -> list[TurnResult]:
        """Stream audio chunks (16 kHz s16le mono) from `source` until it ends; returns this run's turns.

        `pace` says whether the source runs in real time (file at pace or microphone); barge-in
        needs real time and is off otherwise.
        """
        self._clients.connect()
        self._clock = _SendClock(paced=pace)
        self._audio = bytearray()
        self._speech_end_hint_ms = speech_end_ms
        self._run_results = []
        streaming = self.mode == "streaming"
        self._barge_in_active = self.barge_in and pace and streaming
        self._preemptive_active = self.preemptive and streaming
        if isinstance(self.sink, PlayoutSink) and not pace:
            self.sink.realtime = False
        config = stt_pb2.RecognitionConfig(
            sample_rate_hz=STT_SAMPLE_RATE_HZ,
            encoding=stt_pb2.LINEAR16,
            language=self.language,
            interim_results=True,
            endpoint_silence_ms=self.endpoint_silence_ms,
            candidate_silence_ms=self.candidate_silence_ms,
        )
        if self.min_endpoint_silence_ms and "min_endpoint_silence_ms" in config.DESCRIPTOR.fields_by_name:
            setattr(config, "min_endpoint_silence_ms", self.min_endpoint_silence_ms)  # noqa: B010 - newer contract
        self._stt_config = config
        self._failure = None
        self._inbox = asyncio.Queue()
        self._wake = asyncio.Event()
        self._input_done = False
        self._listens = []
        self._open_listen(0)
        pump = asyncio.create_task(self._pump_source(source))
        try:
            while self._failure is None and not (self._input_done and all(x.eof for x in self._listens)):
                listen, item = await self._inbox.get()
                if listen is None:  # input over, a failed turn, or the source failed
                    if isinstance(item, BaseException):
                        raise item
                    continue
                if item is None:  # this stream is over
                    listen.eof = True
                    if listen is self._listen and not self._input_done:
                        log.warning("the STT stream ended before the input; ending the run")
                        pump.cancel()
                        self._listen = None
                        self._input_done = True
                    continue
                if isinstance(item, BaseException):
                    if listen.switched:  # draining a finished turn's stream: nothing depends on it
                        log.warning("STT stream of a finished turn failed: %s", item)
                        continue
                    raise item
                if listen is self._listen:  # a switched-out stream's events are ignored
                    await self._on_stt_event(listen, item)
            if self._failure is None:
                if self._spec is not None:
                    spec, self._spec = self._spec, None
                    await self._discard(spec)
                pending = [t.task for t in self._turns if t.task is not None and not t.task.done()]
                while pending and self._failure is None:
                    await asyncio.wait(pending, return_when=asyncio.FIRST_EXCEPTION)
                    pending = [t.task for t in self._turns if t.task is not None and not t.task.done()]
            if self._failure is not None:
                raise self._failure
        finally:
            pump.cancel()
            self._listen = None
            for listen in self._listens:
                for task in listen.tasks:
                    task.cancel()
                listen.call.cancel()
            for turn in self._turns:
                if turn.task is not None and not turn.task.done():
                    self._cancel_calls(turn)
                    turn.task.cancel()
                    with contextlib.suppress(BaseException):
                        await turn.task
                if not turn.done.is_set():
                    self._abort(turn, RuntimeError("conversation run ended"))
            for listen in self._listens:
                self._end_unanswered(listen)
            self._listens = []
            self._turns = []
            self._spec = None
            self._current = None
        return sorted(self._run_results, key=lambda r: r.utterance_index)

    # ----------------------------------------------------------------- STT streams (one per turn)

    def _open_listen(self, offset_ms: int) -> _Listen:
        """Start listening for the next turn: its root span and its STT stream from `offset_ms` on."""
        root = self._tracer.start_span(
            "turn",
            context=trace.set_span_in_context(trace.INVALID_SPAN),  # a new trace per turn
            attributes={"mode": self.mode, "session_id": self.session_id},
        )
        call = self._clients.stt.StreamingRecognize(metadata=telemetry.outgoing_metadata(root))
        listen = _Listen(len(self._listens) + 1, offset_ms, root, call)
        self._listen = listen
        self._listens.append(listen)
        listen.tasks = [
            asyncio.create_task(self._write_stream(listen)),
            asyncio.create_task(self._read_stream(listen)),
        ]
        return listen

    def _switch(self, listen: _Listen, event: stt_pb2.StreamingRecognizeResponse) -> None:
        """The turn's FINAL: half-close its stream, send what follows the FINAL to the next turn's stream.

        The next stream starts where the STT decided the FINAL (its `audio_position_ms`): audio the
        old stream got after that point (sent before the switch) is sent again, so nothing is lost.
        """
        listen.switched = True
        bytes_per_ms = STT_SAMPLE_RATE_HZ * BYTES_PER_SAMPLE // 1000
        resume_ms = min(listen.offset_ms + int(event.audio_position_ms), listen.sent // bytes_per_ms)
        self._listen = None
        if not self._input_done or resume_ms * bytes_per_ms < len(self._audio):
            self._open_listen(resume_ms)
        self._wake_writers()  # the old stream's writer half-closes it

    def _end_unanswered(self, listen: _Listen) -> None:
        """Listening that heard no turn (silence, noise, the end of the input): not a `turn` trace."""
        if listen.owner is None and listen.root.is_recording():
            listen.root.update_name("listen")
            listen.root.set_attribute("empty", True)
            listen.root.end()

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
                self._audio += chunk
                position += len(chunk) // BYTES_PER_SAMPLE
                self._clock.record(position * 1000.0 / STT_SAMPLE_RATE_HZ, time.perf_counter())
                self._wake_writers()
        except asyncio.CancelledError:
            raise
        except Exception as error:
            self._inbox.put_nowait((None, error))
        finally:
            self._input_done = True
            self._wake_writers()
            self._inbox.put_nowait((None, None))

    async def _write_stream(self, listen: _Listen) -> None:
        """Config, then the run's audio from the stream's offset, until switched out or the input ends."""
        piece = STT_SAMPLE_RATE_HZ * BYTES_PER_SAMPLE * CHUNK_MS // 1000
        try:
            await listen.call.write(stt_pb2.StreamingRecognizeRequest(config=self._stt_config))
            while self._listen is listen:
                if listen.sent < len(self._audio):
                    end = min(len(self._audio), listen.sent + piece)
                    await listen.call.write(
                        stt_pb2.StreamingRecognizeRequest(audio=bytes(self._audio[listen.sent : end]))
                    )
                    listen.sent = end
                    continue
                if self._input_done:
                    break
                await self._wake.wait()
            await listen.call.done_writing()
        except grpc.RpcError as error:
            self._inbox.put_nowait((listen, self._service_error("stt", error)))
        except asyncio.InvalidStateError:
            pass  # the call already ended (the reader reports why)

    async def _read_stream(self, listen: _Listen) -> None:
        try:
            while True:
                response = await listen.call.read()
                if response is grpc.aio.EOF:
                    break
                self._inbox.put_nowait((listen, response))
        except grpc.RpcError as error:
            if self._failure is None:
                self._inbox.put_nowait((listen, self._service_error("stt", error)))
        finally:
            self._inbox.put_nowait((listen, None))

    async def close(self) -> None:
        """End the conversation: cancel what still runs, forget the LLM session, close the channels."""
        for turn in self._turns:
            self._cancel_calls(turn)
            if turn.task is not None:
                turn.task.cancel()
        if self._clients.connected:
            with contextlib.suppress(grpc.RpcError):
                await self._clients.llm.ResetSession(llm_pb2.ResetSessionRequest(session_id=self.session_id), timeout=5)
        await self._clients.close()

    async def __aenter__(self) -> Conversation:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ----------------------------------------------------------------- STT events

    async def _on_stt_event(self, listen: _Listen, event: stt_pb2.StreamingRecognizeResponse) -> None:
        kind = event.event
        if kind == Event.SPEECH_STARTED:
            self._emit(EventKind.SPEECH_STARTED, utterance_index=event.utterance_index)
            current = self._current
            if (
                self._barge_in_active
                and current is not None
                and not current.done.is_set()
                and current.confirmed.is_set()
            ):
                await self._interrupt(current, event)
        elif kind == Event.INTERIM:
            self._emit(EventKind.INTERIM, event.text, event.utterance_index)
        elif kind == Event.CANDIDATE_FINAL:
            self._emit(EventKind.CANDIDATE, event.text, event.utterance_index)
            current = self._current
            if (
                self._preemptive_active
                and self._spec is None
                and event.text.strip()
                and (current is None or current.llm_done.is_set())
            ):
                self._spec = self._start_turn(listen, event, speculative=True)
        elif kind == Event.CANDIDATE_RETRACTED:
            self._emit(EventKind.RETRACTED, utterance_index=event.utterance_index)
            retracted, self._spec = self._spec, None
            if retracted is not None:
                await self._discard(retracted)
        elif kind == Event.FINAL:
            text = event.text.strip()
            self._emit(EventKind.FINAL, text, event.utterance_index)
            spec: _Turn | None = self._spec
            self._spec = None
            if spec is not None and text and _normalize(spec.transcript) == _normalize(text):
                self._confirm(spec, event)
                listen.owner = spec
            else:
                if spec is not None:
                    await self._discard(spec)
                if text:
                    listen.owner = self._start_turn(listen, event, speculative=False)
            if text:  # the turn is heard: the next turn's listening starts now (empty FINALs are noise)
                self._switch(listen, event)

    def _speech_end_t(self, turn: _Turn, event: stt_pb2.StreamingRecognizeResponse) -> float:
        """perf_counter time of the end of the user's speech (event positions are the stream's)."""
        offset, hint = turn.offset_ms, self._speech_end_hint_ms
        if hint is not None and offset + event.start_ms <= hint <= offset + max(event.audio_position_ms, event.end_ms):
            return self._clock.time_of(hint)
        return self._clock.time_of(offset + event.end_ms)

    def _start_turn(self, listen: _Listen, event: stt_pb2.StreamingRecognizeResponse, *, speculative: bool) -> _Turn:
        """A reply attempt in `listen`'s turn trace: speculative ones get their own child span."""
        self._seq += 1
        prev = self._current
        turn = _Turn(self._seq, event.text.strip(), event.utterance_index, speculative, prev)
        turn.offset_ms = listen.offset_ms
        turn.root = listen.root
        turn.speech_end_t = self._speech_end_t(turn, event)
        turn.span = listen.root
        if speculative:
            turn.span = self._tracer.start_span(
                "speculative",
                context=trace.set_span_in_context(listen.root),
                attributes={"transcript_chars": len(turn.transcript), "utterance_index": event.utterance_index},
            )
        turn.span.add_event("speech_end", timestamp=_wall_ns(turn.speech_end_t))
        if not speculative:
            self._mark_final(turn, event)
            turn.confirmed.set()
        self._current = turn
        self._turns.append(turn)
        runner = self._run_streaming_turn if self.mode == "streaming" else self._run_sync_turn
        turn.task = asyncio.create_task(runner(turn))
        turn.task.add_done_callback(self._turn_ended)
        return turn

    def _turn_ended(self, task: asyncio.Task[None]) -> None:
        """A turn that failed (e.g. its service went down) ends the run with its error at once."""
        if task.cancelled() or task.exception() is None:
            return
        if self._failure is None:
            self._failure = task.exception()
            self._inbox.put_nowait((None, None))  # wake the run loop

    def _mark_final(self, turn: _Turn, event: stt_pb2.StreamingRecognizeResponse) -> None:
        turn.t_final = time.perf_counter()
        turn.final_event = event
        turn.speech_end_t = self._speech_end_t(turn, event)
        turn.span.add_event("stt_final", {"text": event.text, "from_candidate": event.from_candidate})

    def _confirm(self, turn: _Turn, event: stt_pb2.StreamingRecognizeResponse) -> None:
        """FINAL confirmed the candidate: the held reply may play; its figures go on the turn's root span."""
        turn.span.set_attribute("confirmed", True)
        # The speculative span ends with the turn (its LLM/TTS calls are its children).
        turn.spec_span, turn.span = turn.span, turn.root
        turn.speculative = False
        turn.preemptive_used = True
        self._mark_final(turn, event)
        turn.span.add_event("speech_end", timestamp=_wall_ns(turn.speech_end_t))
        for name, t in (
            ("first_token", turn.t_first_token),
            ("first_sentence", turn.t_first_sentence),
            ("first_audio", turn.t_first_audio),
        ):
            if t is not None:  # happened while held
                turn.span.add_event(name, timestamp=_wall_ns(t))
        turn.confirmed.set()
        if turn.reply:
            self._emit(EventKind.REPLY_DELTA, turn.reply, turn.utterance_index)  # what was generated while held

    # ----------------------------------------------------------------- streaming turn

    async def _run_streaming_turn(self, turn: _Turn) -> None:
        llm, tts = self._clients.llm, self._clients.tts
        try:
            if turn.prev is not None:
                await turn.prev.llm_done.wait()  # history must hold the previous reply first
            metadata = telemetry.outgoing_metadata(turn.span)
            request = llm_pb2.GenerateRequest(
                messages=[llm_pb2.ChatMessage(role="user", content=turn.transcript)],
                session_id=self.session_id,
                max_tokens=self.max_tokens,
                sampling=self.sampling,
                turn_id=turn.turn_id,
            )
            generate = llm.Generate(request, metadata=metadata)
            synthesize = tts.StreamingSynthesize(metadata=metadata)
            turn.calls = {"llm": generate, "tts": synthesize}
            llm_task = asyncio.create_task(self._pump_llm(turn, generate, synthesize))
            tts_task = asyncio.create_task(self._pump_tts(turn, synthesize))
            play_task = asyncio.create_task(self._play(turn))
            try:
                await asyncio.gather(llm_task, tts_task, play_task)
            except BaseException:
                for task in (llm_task, tts_task, play_task):
                    task.cancel()
                await asyncio.gather(llm_task, tts_task, play_task, return_exceptions=True)
                raise
            self._finish(turn)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            kind = "llm" if not turn.llm_done.is_set() else "tts"
            failure = self._service_error(kind, error) if isinstance(error, grpc.RpcError) else error
            self._abort(turn, failure)
            raise failure from None
        finally:
            turn.llm_done.set()

    async def _pump_llm(self, turn: _Turn, generate: Any, synthesize: Any) -> None:
        try:
            if self.voice:
                await self._write_tts(
                    synthesize, tts_pb2.StreamingSynthesizeRequest(config=tts_pb2.SynthesisConfig(voice=self.voice))
                )
            while True:
                message = await generate.read()
                if message is grpc.aio.EOF:
                    break
                if message.text:
                    now = time.perf_counter()
                    if turn.t_first_token is None:
                        turn.t_first_token = now
                        turn.span.add_event("first_token")
                    turn.reply_parts.append(message.text)
                    await self._write_tts(synthesize, tts_pb2.StreamingSynthesizeRequest(text=message.text))
                    if turn.t_first_sentence is None and _SENTENCE_END.search(turn.reply):
                        turn.t_first_sentence = now
                        turn.span.add_event("first_sentence")
                    if turn.confirmed.is_set():
                        self._emit(EventKind.REPLY_DELTA, message.text, turn.utterance_index)
                if message.HasField("final"):
                    turn.summary = message.final
            turn.generation_complete = True
            turn.t_llm_done = time.perf_counter()
            turn.llm_done.set()
            if turn.t_first_sentence is None and turn.reply.strip():
                turn.t_first_sentence = turn.t_llm_done
        except grpc.RpcError as error:
            raise self._service_error("llm", error) from None
        try:
            await synthesize.done_writing()
        except grpc.RpcError as error:
            raise self._service_error("tts", error) from None
        except asyncio.InvalidStateError:
            raise await self._clients.ended_call_error("tts", synthesize) from None

    async def _write_tts(self, synthesize: Any, request: tts_pb2.StreamingSynthesizeRequest) -> None:
        try:
            await synthesize.write(request)
        except asyncio.InvalidStateError:
            # The TTS call already ended (e.g. its server died): report its status, naming the service.
            raise await self._clients.ended_call_error("tts", synthesize) from None

    async def _pump_tts(self, turn: _Turn, synthesize: Any) -> None:
        last: _Unit | None = None
        try:
            while True:
                message = await synthesize.read()
                if message is grpc.aio.EOF:
                    break
                if not message.audio:
                    continue
                if turn.t_first_audio is None:
                    turn.t_first_audio = time.perf_counter()
                    turn.span.add_event("first_audio")
                samples = len(message.audio) // BYTES_PER_SAMPLE
                key = (message.sentence_index, message.text_start_char, message.text_end_char)
                unit = turn.units.get(key)
                if unit is None:
                    if last is not None:
                        last.complete = True
                    unit = _Unit(text=message.text, offset=turn.received_samples)
                    turn.units[key] = unit
                    turn.unit_order.append(unit)
                unit.samples += samples
                unit.complete = unit.complete or message.sentence_end
                last = unit
                turn.received_samples += samples
                turn.audio_q.put_nowait((message.audio, message.sample_rate_hz))
        except grpc.RpcError as error:
            raise self._service_error("tts", error) from None
        finally:
            if last is not None:
                last.complete = True
            turn.audio_q.put_nowait(None)

    async def _play(self, turn: _Turn) -> None:
        await turn.confirmed.wait()
        if turn.prev is not None:
            await turn.prev.done.wait()
        while True:
            item = await turn.audio_q.get()
            if item is None:
                break
            pcm, rate = item
            if not turn.playing:
                self._start_playback(turn, rate)
            self.sink.write(pcm)
        if turn.playing:
            await self.sink.drain()
            turn.audio = self.sink.end()
        turn.t_end = time.perf_counter()

    def _start_playback(self, turn: _Turn, rate: int) -> None:
        turn.playing = True
        turn.sample_rate_hz = rate
        turn.t_playback_start = time.perf_counter()
        self.sink.begin(rate)
        turn.playback_span = self._tracer.start_span("playback", context=trace.set_span_in_context(turn.span))
        turn.playback_span.add_event("first_audio")

    # ----------------------------------------------------------------- sync turn (the seed's dumb pipe)

    async def _run_sync_turn(self, turn: _Turn) -> None:
        clients = self._clients
        kind = "stt"
        try:
            if turn.prev is not None:
                await turn.prev.done.wait()
            metadata = telemetry.outgoing_metadata(turn.span)
            event = turn.final_event
            start_ms = max(0, turn.offset_ms + int(event.start_ms) - SYNC_LEAD_MS)
            end_ms = turn.offset_ms + max(int(event.audio_position_ms), int(event.end_ms))
            bytes_per_ms = STT_SAMPLE_RATE_HZ * BYTES_PER_SAMPLE // 1000
            clip = bytes(self._audio[start_ms * bytes_per_ms : end_ms * bytes_per_ms])
            recognized = await clients.stt.Recognize(
                stt_pb2.RecognizeRequest(
                    config=stt_pb2.RecognitionConfig(sample_rate_hz=STT_SAMPLE_RATE_HZ, language=self.language),
                    audio=clip,
                ),
                metadata=metadata,
            )
            turn.t_final = time.perf_counter()
            turn.span.add_event("stt_final", {"text": recognized.text})
            if recognized.text.strip():
                turn.transcript = recognized.text.strip()
            kind = "llm"
            request = llm_pb2.GenerateRequest(
                messages=[llm_pb2.ChatMessage(role="user", content=turn.transcript)],
                session_id=self.session_id,
                max_tokens=self.max_tokens,
                sampling=self.sampling,
            )
            async for message in clients.llm.Generate(request, metadata=metadata):
                if message.text:
                    if turn.t_first_token is None:
                        turn.t_first_token = time.perf_counter()
                        turn.span.add_event("first_token")
                    turn.reply_parts.append(message.text)
                if message.HasField("final"):
                    turn.summary = message.final
            turn.generation_complete = True
            turn.t_llm_done = turn.t_first_sentence = time.perf_counter()
            turn.llm_done.set()
            self._emit(EventKind.REPLY_DELTA, turn.reply, turn.utterance_index)
            kind = "tts"
            chunks: list[bytes] = []
            rate = 0
            if turn.reply.strip():
                async for chunk in clients.tts.Synthesize(
                    tts_pb2.SynthesizeRequest(text=turn.reply, voice=self.voice), metadata=metadata
                ):
                    if chunk.audio:
                        if turn.t_first_audio is None:
                            turn.t_first_audio = time.perf_counter()
                            turn.span.add_event("first_audio")
                        chunks.append(chunk.audio)
                        rate = chunk.sample_rate_hz
            if chunks:
                self._start_playback(turn, rate)
                for pcm in chunks:
                    self.sink.write(pcm)
                await self.sink.drain()
                turn.audio = self.sink.end()
            turn.t_end = time.perf_counter()
            self._finish(turn)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            failure = self._service_error(kind, error) if isinstance(error, grpc.RpcError) else error
            self._abort(turn, failure)
            raise failure from None
        finally:
            turn.llm_done.set()

    # ----------------------------------------------------------------- interruption

    def _cancel_calls(self, turn: _Turn) -> list[str]:
        cancelled = []
        for kind, call in turn.calls.items():
            if not call.done():
                call.cancel()
                cancelled.append(kind)
        return cancelled

    async def _stop_task(self, turn: _Turn) -> None:
        task = turn.task
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _interrupt(self, turn: _Turn, event: stt_pb2.StreamingRecognizeResponse) -> None:
        """Barge-in: silence the agent, cancel its LLM and TTS calls, record what the user heard."""
        now = time.perf_counter()
        played = self.sink.stop() if turn.playing else 0
        turn.cancelled_rpcs = self._cancel_calls(turn)
        await self._stop_task(turn)
        turn.barge_in = True
        turn.heard = heard_text(turn.unit_order, played)
        if turn.playing:
            turn.audio = self.sink.end()
        turn.t_end = now
        if turn.playback_span is not None:
            turn.playback_span.add_event("barge_in", {"played_samples": played, "heard_chars": len(turn.heard)})
        turn.span.add_event("barge_in", {"heard": turn.heard, "cancelled": ",".join(turn.cancelled_rpcs)})
        self._emit(EventKind.BARGE_IN, turn.heard, turn.utterance_index)
        await self._record_heard(turn)
        self._finish(turn)

    async def _record_heard(self, turn: _Turn) -> None:
        """Tell the LLM what of its reply the user heard; the rest never happened.

        The LLM stores a finished reply, or an empty "interrupted" marker for a generation cancelled
        after it started; RecordHeardReply replaces either. A call cancelled before any token came
        may have been queued (nothing stored): then the last assistant message is the previous
        turn's and must not be touched; an empty marker, if any, already says "heard nothing".
        """
        if turn.t_first_token is None:
            return
        try:
            await self._clients.llm.RecordHeardReply(
                llm_pb2.RecordHeardReplyRequest(session_id=self.session_id, heard_text=turn.heard or ""),
                metadata=telemetry.outgoing_metadata(turn.span),
                timeout=10,
            )
        except grpc.RpcError as error:
            log.warning("RecordHeardReply failed: %s", error)
            turn.span.add_event("record_heard_failed", {"error": str(error.code())})

    async def _discard(self, turn: _Turn) -> None:
        """Throw away speculative work: cancel its calls; nothing was played."""
        turn.cancelled_rpcs = self._cancel_calls(turn)
        await self._stop_task(turn)
        if "llm" in turn.calls:
            # The LLM stores a cancelled generation as user message + empty reply, a finished one whole:
            # remove the turn (DiscardTurn waits for the cancelled call to settle first).
            await self._discard_llm_turn(turn)
        turn.span.set_attribute("discarded", True)
        turn.span.add_event("cancelled", {"rpcs": ",".join(turn.cancelled_rpcs)})
        turn.span.end()
        turn.llm_done.set()
        turn.done.set()
        if self._current is turn:
            self._current = turn.prev if turn.prev is not None and not turn.prev.done.is_set() else None
        self._turns = [t for t in self._turns if t is not turn]
        self._emit(EventKind.DISCARDED, turn.transcript, turn.utterance_index)

    async def _discard_llm_turn(self, turn: _Turn) -> None:
        try:
            response = await self._clients.llm.DiscardTurn(
                llm_pb2.DiscardTurnRequest(session_id=self.session_id, turn_id=turn.turn_id),
                metadata=telemetry.outgoing_metadata(turn.span),
                timeout=10,
            )
            turn.span.add_event("llm_turn_discarded", {"removed_messages": response.removed_messages})
        except grpc.RpcError as error:  # NOT_FOUND: the session's first Generate never reached the server
            if error.code() != grpc.StatusCode.NOT_FOUND:
                log.warning("DiscardTurn failed: %s", error)
            turn.span.add_event("discard_turn_failed", {"error": str(error.code())})

    def _abort(self, turn: _Turn, error: BaseException) -> None:
        if turn.done.is_set():
            return
        self._cancel_calls(turn)
        if self.sink is not None and turn.playing:
            self.sink.stop()
            self.sink.end()
        turn.span.record_exception(error)
        turn.span.set_status(trace.Status(trace.StatusCode.ERROR, type(error).__name__))
        if turn.playback_span is not None:
            turn.playback_span.end()
        if turn.spec_span is not None:
            turn.spec_span.end()
        turn.span.end()
        turn.done.set()

    # ----------------------------------------------------------------- results

    def _finish(self, turn: _Turn) -> None:
        if turn.done.is_set():
            return
        base = turn.speech_end_t

        def ms(t: float | None) -> float | None:
            return None if t is None else (t - base) * 1000.0

        reply = turn.reply if turn.summary is None or not turn.summary.text else turn.summary.text
        if turn.barge_in:
            reply = turn.reply
        result = TurnResult(
            mode=self.mode,
            transcript=turn.transcript,
            reply=reply,
            heard_reply=turn.heard if turn.heard is not None else reply,
            dead_air_ms=ms(turn.t_playback_start),
            stt_final_ms=ms(turn.t_final),
            llm_ttft_ms=ms(turn.t_first_token),
            first_sentence_ms=ms(turn.t_first_sentence),
            tts_ttfa_ms=ms(turn.t_first_audio),
            playback_start_ms=ms(turn.t_playback_start),
            total_ms=ms(turn.t_end),
            barge_in=turn.barge_in,
            preemptive_used=turn.preemptive_used,
            trace_id=format(turn.span.get_span_context().trace_id, "032x"),
            session_id=self.session_id,
            audio=turn.audio,
            sample_rate_hz=turn.sample_rate_hz,
            utterance_index=turn.utterance_index,
            audio_s=len(turn.audio) / BYTES_PER_SAMPLE / turn.sample_rate_hz if turn.sample_rate_hz else 0.0,
            llm_done_ms=ms(turn.t_llm_done),
            prompt_tokens=turn.summary.prompt_tokens if turn.summary else 0,
            cached_prompt_tokens=turn.summary.cached_prompt_tokens if turn.summary else 0,
            completion_tokens=turn.summary.completion_tokens if turn.summary else 0,
            cancelled_rpcs=list(turn.cancelled_rpcs),
        )
        span = turn.span
        for key in ("dead_air_ms", "total_ms", "stt_final_ms", "llm_ttft_ms", "tts_ttfa_ms"):
            value = getattr(result, key)
            if value is not None:
                span.set_attribute(key, round(value, 1))
        span.set_attribute("transcript_chars", len(result.transcript))
        span.set_attribute("reply_chars", len(result.reply))
        span.set_attribute("barge_in", result.barge_in)
        span.set_attribute("preemptive_used", result.preemptive_used)
        if turn.playback_span is not None:
            turn.playback_span.set_attribute("audio_s", round(result.audio_s, 3))
            if turn.barge_in:
                turn.playback_span.add_event("cancelled")
            turn.playback_span.end(end_time=_wall_ns(turn.t_end) if turn.t_end else None)
        if turn.spec_span is not None:
            turn.spec_span.end()
        span.end(end_time=_wall_ns(turn.t_end) if turn.t_end else None)
        turn.done.set()
        turn.llm_done.set()
        self.results.append(result)
        self._run_results.append(result)
        self._emit(EventKind.TURN, result.transcript, turn.utterance_index, result)


async def _pcm_source(pcm: bytes, pace: bool, chunk_ms: int = CHUNK_MS) -> AsyncIterator[bytes]:
    """Chunks of `pcm` (16 kHz s16le), at real-time pace on an absolute schedule when `pace`."""
    step = STT_SAMPLE_RATE_HZ * BYTES_PER_SAMPLE * chunk_ms // 1000
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
