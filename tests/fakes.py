"""Fake STT, LLM and TTS gRPC servicers with scripted behaviour, for fast orchestration tests.

They implement the real protos on an in-process grpc.aio server (port 0) and expose asyncio
events a test can wait on or set, so timing is controlled without sleeps:

* FakeSpeechToText plays a script of events, each released when the client has sent enough
  audio (`at_ms`) and, optionally, when the test sets `after`.
* FakeLanguageModel streams a scripted reply word by word, can hold after N words until the test
  sets `release`, and keeps sessions like llm_service: a finished turn stores the user message
  and the reply, a turn cancelled while generating stores the user message and an EMPTY reply,
  RecordHeardReply replaces the last assistant reply, DiscardTurn removes the messages stored with
  a `turn_id` (after that turn's Generate has ended; a turn discarded earlier stores nothing).
* FakeTextToSpeech speaks each complete sentence as a constant tone: `samples_per_char` samples
  per character, in chunks, with the sentence text and character offsets like tts_service.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from orchestrator.audio import AudioSink, MemorySink
from voice.llm.v1 import llm_pb2, llm_pb2_grpc
from voice.stt.v1 import stt_pb2, stt_pb2_grpc
from voice.tts.v1 import tts_pb2, tts_pb2_grpc

Ev = stt_pb2.StreamingRecognizeResponse


def _traceparent(context: Any) -> str:
    return next((str(v) for k, v in context.invocation_metadata() or () if k == "traceparent"), "")


@dataclass
class SttStep:
    """One scripted STT event."""

    event: int
    text: str = ""
    at_ms: int | None = None  # emitted once this much audio has arrived (None: when input ends)
    after: asyncio.Event | None = None  # and once the test has set this
    start_ms: int = 0
    end_ms: int = 0
    utterance_index: int = 0


def utterance(
    text: str, start_ms: int, end_ms: int, final_at_ms: int, *, index: int = 0, candidate_at_ms: int | None = None
) -> list[SttStep]:
    """SPEECH_STARTED, one INTERIM, optional CANDIDATE_FINAL and the FINAL of one utterance."""
    steps = [
        SttStep(Ev.SPEECH_STARTED, at_ms=start_ms + 100, start_ms=start_ms, utterance_index=index),
        SttStep(Ev.INTERIM, text.split()[0], at_ms=start_ms + 200, start_ms=start_ms, utterance_index=index),
    ]
    if candidate_at_ms is not None:
        steps.append(SttStep(Ev.CANDIDATE_FINAL, text, at_ms=candidate_at_ms, start_ms=start_ms, end_ms=end_ms))
    steps.append(SttStep(Ev.FINAL, text, at_ms=final_at_ms, start_ms=start_ms, end_ms=end_ms, utterance_index=index))
    return steps


class FakeSpeechToText(stt_pb2_grpc.SpeechToTextServicer):
    """Plays one script across the orchestrator's streams (one StreamingRecognize per turn).

    `at_ms`, `start_ms` and `end_ms` are positions in the whole input; events report them relative
    to their stream, like stt_service. A stream that emits a non-empty FINAL hands the rest of the
    script over to the next stream, which starts at that FINAL's `audio_position_ms` (where the
    orchestrator resumes); a stream whose input ends without that emits the rest of the script.
    """

    def __init__(self, steps: list[SttStep] | None = None, recognize_text: str = "") -> None:
        self.steps = steps or []
        self.recognize_text = recognize_text
        self.configs: list[stt_pb2.RecognitionConfig] = []
        self.recognize_requests: list[stt_pb2.RecognizeRequest] = []
        self.streams_opened = 0
        self.traceparents: list[str] = []  # W3C traceparent of each StreamingRecognize call
        self.emitted: list[int] = []
        self.input_ended = asyncio.Event()  # the input of a stream that kept the script ended
        self.hints: list[tuple[str, float]] = []  # end_of_turn hints received (text, probability)
        self._hinted: dict[str, asyncio.Event] = {}
        self._cursor = 0
        self._next_base_ms = 0

    async def StreamingRecognize(
        self, request_iterator: AsyncIterator[stt_pb2.StreamingRecognizeRequest], context: Any
    ) -> AsyncIterator[stt_pb2.StreamingRecognizeResponse]:
        self.streams_opened += 1
        self.traceparents.append(_traceparent(context))
        base = self._next_base_ms
        state = {"ms": 0.0, "rate": 16000, "handed_over": False}
        changed = asyncio.Event()
        ended = asyncio.Event()

        async def read() -> None:
            async for request in request_iterator:
                if request.HasField("config"):
                    self.configs.append(request.config)
                    state["rate"] = request.config.sample_rate_hz or 16000
                elif request.HasField("end_of_turn"):
                    self.hints.append((request.end_of_turn.text, request.end_of_turn.probability))
                    self.hinted(request.end_of_turn.text).set()
                else:
                    state["ms"] += len(request.audio) / 2 / state["rate"] * 1000
                changed.set()
            ended.set()
            if not state["handed_over"]:
                self.input_ended.set()
            changed.set()

        def rel(ms: int) -> int:
            return max(0, ms - base)

        reader = asyncio.create_task(read())
        try:
            while self._cursor < len(self.steps):
                step = self.steps[self._cursor]
                if step.after is not None:
                    await step.after.wait()
                while not ended.is_set() and (step.at_ms is None or base + state["ms"] < step.at_ms):
                    changed.clear()
                    await changed.wait()
                self._cursor += 1
                self.emitted.append(step.event)
                position = int(state["ms"])
                if step.event == Ev.FINAL and step.text.strip():
                    state["handed_over"] = True
                    self._next_base_ms = base + position
                yield Ev(
                    event=step.event,  # type: ignore[arg-type]
                    text=step.text,
                    is_final=step.event == Ev.FINAL,
                    utterance_index=step.utterance_index,
                    start_ms=rel(step.start_ms),
                    end_ms=rel(step.end_ms),
                    audio_position_ms=position,
                )
                if state["handed_over"]:
                    break
            await ended.wait()
        finally:
            reader.cancel()

    def hinted(self, text: str) -> asyncio.Event:
        """Set once an end-of-turn hint for `text` has arrived (on any stream)."""
        return self._hinted.setdefault(text, asyncio.Event())

    async def Recognize(self, request: stt_pb2.RecognizeRequest, context: Any) -> stt_pb2.RecognizeResponse:
        self.recognize_requests.append(request)
        duration_ms = len(request.audio) / 2 / (request.config.sample_rate_hz or 16000) * 1000
        return stt_pb2.RecognizeResponse(text=self.recognize_text, audio_duration_ms=int(duration_ms))


@dataclass
class FakeGeneration:
    user_text: str
    session_id: str
    words_sent: int = 0
    cancelled: bool = False
    finished: bool = False
    turn_id: str = ""


class FakeLanguageModel(llm_pb2_grpc.LanguageModelServicer):
    def __init__(
        self,
        reply: str | Callable[[str], str] = "Hello there. How can I help you today?",
        *,
        hold_after_words: int | None = None,
        release: asyncio.Event | None = None,
        word_delay_s: float = 0.0,
        end_of_turn_probability: float = 0.8,
    ) -> None:
        self.reply = reply
        self.end_of_turn_probability = end_of_turn_probability
        self.prefills: list[str] = []  # Prefill texts, in order
        self.hold_after_words = hold_after_words
        self.release = release or asyncio.Event()
        self.word_delay_s = word_delay_s
        self.sessions: dict[str, list[tuple[str, str]]] = {}
        self.turn_ids: dict[str, list[str]] = {}  # parallel to `sessions`: each message's turn_id
        self.discarded: list[tuple[str, str, int]] = []  # DiscardTurn calls: (session, turn, removed)
        self._running: dict[tuple[str, str], asyncio.Event] = {}  # set when that turn's Generate ends
        self.generations: list[FakeGeneration] = []
        self.generation_started = asyncio.Event()
        self.generation_cancelled = asyncio.Event()
        self.generation_finished = asyncio.Event()
        self.held = asyncio.Event()  # a generation is waiting for `release`
        self.heard_records: list[str] = []
        self.traceparents: list[str] = []  # W3C traceparent of each Generate call

    def _reply_for(self, text: str) -> str:
        return self.reply(text) if callable(self.reply) else self.reply

    async def Generate(self, request: llm_pb2.GenerateRequest, context: Any) -> AsyncIterator[llm_pb2.GenerateResponse]:
        self.traceparents.append(_traceparent(context))
        user = [m.content for m in request.messages if m.role == "user"][-1]
        gen = FakeGeneration(user, request.session_id, turn_id=request.turn_id)
        self.generations.append(gen)
        done = self._running[(request.session_id, request.turn_id)] = asyncio.Event()
        self.generation_started.set()
        words = re.findall(r"\S+\s*", self._reply_for(user))

        def ended(_context: Any = None) -> None:
            """The call is over; before the reply was complete it was cancelled."""
            if not gen.finished and not gen.cancelled:
                gen.cancelled = True
                self._store(request, user, "")  # like llm_service: interrupted marker
                self.generation_cancelled.set()
            done.set()

        # A call cancelled while this generator waits at a `yield` is never resumed (no
        # CancelledError here): the done callback sees that cancellation too.
        context.add_done_callback(ended)
        try:
            if request.score_end_of_turn:
                yield llm_pb2.GenerateResponse(end_of_turn_probability=self.end_of_turn_probability)
            for i, word in enumerate(words):
                if self.hold_after_words is not None and i == self.hold_after_words:
                    self.held.set()
                    await self.release.wait()
                if self.word_delay_s:
                    await asyncio.sleep(self.word_delay_s)  # simulated generation speed
                gen.words_sent += 1
                yield llm_pb2.GenerateResponse(text=word)
            text = "".join(words)
            self._store(request, user, text)
            gen.finished = True
            self.generation_finished.set()
            yield llm_pb2.GenerateResponse(
                final=llm_pb2.GenerationSummary(finish_reason=llm_pb2.STOP, completion_tokens=len(words), text=text)
            )
        finally:
            ended()

    def _store(self, request: llm_pb2.GenerateRequest, user: str, reply: str) -> None:
        sid, turn = request.session_id, request.turn_id
        if sid and not (turn and any(d[:2] == (sid, turn) for d in self.discarded)):
            self.sessions.setdefault(sid, []).extend([("user", user), ("assistant", reply)])
            self.turn_ids.setdefault(sid, []).extend([turn, turn])

    async def Prefill(self, request: llm_pb2.PrefillRequest, context: Any) -> llm_pb2.PrefillResponse:
        self.prefills.append(request.text)
        return llm_pb2.PrefillResponse(end_of_turn_probability=0.9 if request.text.endswith("?") else 0.1)

    async def DiscardTurn(self, request: llm_pb2.DiscardTurnRequest, context: Any) -> llm_pb2.DiscardTurnResponse:
        sid, turn = request.session_id, request.turn_id
        if (sid, turn) in self._running:
            await self._running[(sid, turn)].wait()
        if sid not in self.sessions:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"session {sid!r} is unknown")
        keep = [i for i, t in enumerate(self.turn_ids[sid]) if t != turn]
        removed = len(self.sessions[sid]) - len(keep)
        self.sessions[sid] = [self.sessions[sid][i] for i in keep]
        self.turn_ids[sid] = [self.turn_ids[sid][i] for i in keep]
        self.discarded.append((sid, turn, removed))
        return llm_pb2.DiscardTurnResponse(removed_messages=removed)

    async def RecordHeardReply(
        self, request: llm_pb2.RecordHeardReplyRequest, context: Any
    ) -> llm_pb2.RecordHeardReplyResponse:
        history = self.sessions.get(request.session_id)
        if not history or history[-1][0] != "assistant":
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "last message is not an assistant reply")
        assert history is not None
        history[-1] = ("assistant", request.heard_text)
        self.heard_records.append(request.heard_text)
        return llm_pb2.RecordHeardReplyResponse(stored_text=request.heard_text)

    async def ResetSession(self, request: llm_pb2.ResetSessionRequest, context: Any) -> llm_pb2.ResetSessionResponse:
        history = self.sessions.pop(request.session_id, None)
        self.turn_ids.pop(request.session_id, None)
        if history is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"session {request.session_id!r} is unknown")
        return llm_pb2.ResetSessionResponse(dropped_messages=len(history or []))

    async def GetSession(self, request: llm_pb2.GetSessionRequest, context: Any) -> llm_pb2.GetSessionResponse:
        history = self.sessions.get(request.session_id)
        if history is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"session {request.session_id!r} is unknown")
        return llm_pb2.GetSessionResponse(
            messages=[llm_pb2.ChatMessage(role=r, content=c) for r, c in history or []], context_tokens=2048
        )


_SENTENCE = re.compile(r"[^.!?]*[.!?]+\s*")
_SENTENCE_DONE = re.compile(r".*?[.!?]+\s+", re.S)


@dataclass
class FakeSynthesis:
    texts: list[str] = field(default_factory=list)
    chunks_sent: int = 0
    # A client's cancel can reach the servicer as the end of its input (then the stream looks
    # finished) or as a CancelledError: tests wait for `ended` and check what was sent and synthesized.
    cancelled: bool = False
    finished: bool = False
    traceparent: str = ""
    ended: asyncio.Event = field(default_factory=asyncio.Event)  # the call is over, however it ended


class FakeTextToSpeech(tts_pb2_grpc.TextToSpeechServicer):
    def __init__(self, *, sample_rate_hz: int = 16000, samples_per_char: int = 160, chunk_samples: int = 1600) -> None:
        self.sample_rate_hz = sample_rate_hz
        self.samples_per_char = samples_per_char
        self.chunk_samples = chunk_samples
        self.syntheses: list[FakeSynthesis] = []
        self.first_audio_sent = asyncio.Event()

    def _speak(self, text: str, index: int, start: int) -> list[tts_pb2.SynthesizeResponse]:
        samples = max(1, len(text.strip())) * self.samples_per_char
        pcm = b"\x00\x10" * samples  # constant tone at 1/8 full scale
        step = self.chunk_samples * 2
        pieces = [pcm[i : i + step] for i in range(0, len(pcm), step)]
        return [
            tts_pb2.SynthesizeResponse(
                audio=piece,
                sample_rate_hz=self.sample_rate_hz,
                text=text,
                sentence_index=index,
                sentence_end=n == len(pieces) - 1,
                text_start_char=start,
                text_end_char=start + len(text),
                spoken_text=text.strip(),
            )
            for n, piece in enumerate(pieces)
        ]

    async def StreamingSynthesize(
        self, request_iterator: AsyncIterator[tts_pb2.StreamingSynthesizeRequest], context: Any
    ) -> AsyncIterator[tts_pb2.SynthesizeResponse]:
        record = FakeSynthesis(traceparent=_traceparent(context))
        self.syntheses.append(record)
        sentences: asyncio.Queue[tuple[str, int] | None] = asyncio.Queue()

        async def read() -> None:
            buffer, consumed = "", 0
            async for request in request_iterator:
                if request.HasField("config"):
                    continue
                record.texts.append(request.text)
                buffer += request.text
                while (match := _SENTENCE_DONE.match(buffer)) is not None:
                    sentence = match.group(0)
                    sentences.put_nowait((sentence, consumed))
                    consumed += len(sentence)
                    buffer = buffer[len(sentence) :]
            if buffer.strip():
                sentences.put_nowait((buffer, consumed))
            sentences.put_nowait(None)

        reader = asyncio.create_task(read())

        def ended(_context: Any = None) -> None:
            reader.cancel()
            record.ended.set()

        context.add_done_callback(ended)  # also when cancelled at a `yield` (see Generate)
        try:
            index = 0
            while (item := await sentences.get()) is not None:
                text, start = item
                for chunk in self._speak(text, index, start):
                    record.chunks_sent += 1
                    self.first_audio_sent.set()
                    yield chunk
                index += 1
            record.finished = True
        except asyncio.CancelledError:
            record.cancelled = True
            raise
        finally:
            ended()

    async def Synthesize(
        self, request: tts_pb2.SynthesizeRequest, context: Any
    ) -> AsyncIterator[tts_pb2.SynthesizeResponse]:
        record = FakeSynthesis(texts=[request.text])
        self.syntheses.append(record)
        start = 0
        for index, sentence in enumerate(_SENTENCE.findall(request.text) or [request.text]):
            for chunk in self._speak(sentence, index, start):
                record.chunks_sent += 1
                self.first_audio_sent.set()
                yield chunk
            start += len(sentence)
        record.finished = True


@dataclass
class FakeServices:
    """The three fakes served on one in-process grpc.aio server (port 0)."""

    stt: FakeSpeechToText
    llm: FakeLanguageModel
    tts: FakeTextToSpeech
    server: grpc.aio.Server
    address: str


async def serve_fakes(stt: FakeSpeechToText, llm: FakeLanguageModel, tts: FakeTextToSpeech) -> FakeServices:
    server = grpc.aio.server()
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    await health.set("", health_pb2.HealthCheckResponse.SERVING)
    stt_pb2_grpc.add_SpeechToTextServicer_to_server(stt, server)
    llm_pb2_grpc.add_LanguageModelServicer_to_server(llm, server)
    tts_pb2_grpc.add_TextToSpeechServicer_to_server(tts, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return FakeServices(stt, llm, tts, server, f"127.0.0.1:{port}")


class RecordingSink(MemorySink):
    """A MemorySink that also tells the test when audio arrives (`audio_started`, `written`)."""

    def __init__(self, *, realtime: bool = True) -> None:
        super().__init__(realtime=realtime)
        self.audio_started = asyncio.Event()
        self.written: list[int] = []  # bytes per write, all replies

    def write(self, pcm: bytes) -> None:
        super().write(pcm)
        self.written.append(len(pcm))
        self.audio_started.set()


class ManualSink(AudioSink):
    """A sink whose playback position the test sets: `played` samples heard of the current reply.

    drain() returns once the test sets `release` (or at once when `played` covers everything).
    """

    def __init__(self) -> None:
        self.played = 0
        self.release = asyncio.Event()
        self.replies: list[bytes] = []
        self.stops: list[int] = []
        self._buffer = bytearray()
        self._received = asyncio.Event()
        self.sample_rate_hz = 0

    def begin(self, sample_rate_hz: int) -> None:
        self.sample_rate_hz = sample_rate_hz
        self._buffer = bytearray()
        self.played = 0

    def write(self, pcm: bytes) -> None:
        self._buffer += pcm
        self._received.set()

    @property
    def received_samples(self) -> int:
        return len(self._buffer) // 2

    async def wait_for_samples(self, samples: int) -> None:
        while self.received_samples < samples:
            self._received.clear()
            await self._received.wait()

    def played_samples(self) -> int:
        return min(self.played, self.received_samples)

    def stop(self) -> int:
        played = self.played_samples()
        del self._buffer[played * 2 :]
        self.stops.append(played)
        return played

    async def drain(self) -> None:
        await self.release.wait()

    def end(self) -> bytes:
        audio = bytes(self._buffer)
        self.replies.append(audio)
        return audio
