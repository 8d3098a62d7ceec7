"""The conversation loop: STT events → turn-taking decisions → replies, with preemption and barge-in.

Each conversational turn is one trace (`tracing`), heard on its own STT stream (`listening`). The
rules of who speaks when live in `turn_taking`; this loop carries out their steps: start a reply
(streamed by `reply`, or the `sync_turn` baseline), hold / release / discard a speculative one,
stop a reply on barge-in (and keep the LLM history true, `history`), and turn each finished turn
into a `TurnResult` (`timing`) for the caller and the listener (`events`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator

import grpc
from opentelemetry.trace import TracerProvider

from orchestrator import history
from orchestrator.audio import STT_SAMPLE_RATE_HZ, AudioSink, MemorySink, PlayoutSink, resample_pcm16
from orchestrator.clients import Clients, check_services
from orchestrator.config import Mode, ServiceAddresses, Settings
from orchestrator.events import ConversationEvent, EventKind, Listener, notify
from orchestrator.listening import Listening, SttEvent, SttStream, pcm_source, recognition_config, ui_event_of
from orchestrator.reply import ReplyContext, speak_streaming
from orchestrator.speculation import EndOfTurnHints, SpeculationStats
from orchestrator.sync_turn import speak_sync, utterance_span_ms
from orchestrator.timing import Mark, TurnResult
from orchestrator.tracing import TurnTrace, turn_tracer
from orchestrator.turn import Turn
from orchestrator.turn_taking import Action, TurnTaking
from voice.llm.v1 import llm_pb2


class Conversation:
    """A spoken conversation with the agent through the three services.

    `sink` receives the agent's audio (default: an in-memory sink that plays in simulated real
    time); `listener` gets the UI events. Spans go to `tracer_provider`, else to the process's
    provider (which the entry point sets up; the library never installs one).
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
        end_of_turn_hints: bool = True,
        voice: str = "",
        max_tokens: int = 0,
        sampling: llm_pb2.SamplingOptions | None = None,
        listener: Listener | None = None,
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        if mode not in ("streaming", "sync"):
            raise ValueError(f"mode must be 'streaming' or 'sync', not {mode!r}")
        self.addresses = addresses
        self.settings = Settings(
            mode=mode,
            session_id=session_id or f"conv-{uuid.uuid4().hex[:12]}",
            preemptive=preemptive,
            language=language,
            voice=voice,
            max_tokens=max_tokens,
            sampling=sampling,
            endpoint_silence_ms=endpoint_silence_ms,
            candidate_silence_ms=candidate_silence_ms,
            min_endpoint_silence_ms=min_endpoint_silence_ms,
            end_of_turn_hints=end_of_turn_hints,
        )
        self.barge_in = barge_in
        self.sink: AudioSink = sink if sink is not None else MemorySink()
        self.listener = listener
        self.results: list[TurnResult] = []
        self._tracer = turn_tracer(tracer_provider)
        self._clients = Clients(addresses)
        self._history = history.ClientHistory()
        self._reply = ReplyContext(self._clients, self.sink, self.settings, self._emit, self._history.before)
        self._seq = 0
        self._taking = TurnTaking(barge_in=barge_in, preemptive=preemptive)
        self._turns: list[Turn] = []
        self._run_results: list[TurnResult] = []
        self._failure: BaseException | None = None
        self._listening: Listening | None = None
        self._hints: EndOfTurnHints | None = None
        self._discards = history.BackgroundDiscards()
        self.speculation = SpeculationStats()  # speculative work kept / thrown away, over all runs

    @property
    def mode(self) -> Mode:
        return self.settings.mode

    @property
    def session_id(self) -> str:
        return self.settings.session_id

    @property
    def preemptive(self) -> bool:
        return self.settings.preemptive

    async def check_services(self, timeout_s: float = 2.0) -> None:
        """Raise ServiceDownError naming the first service that is not SERVING."""
        await check_services(self.addresses, timeout_s)

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
        return await self.run(pcm_source(audio, pace), pace=pace, speech_end_ms=speech_end_ms)

    async def run(
        self, source: AsyncIterator[bytes], *, pace: bool = True, speech_end_ms: int | None = None
    ) -> list[TurnResult]:
        """Stream audio chunks (16 kHz s16le mono) from `source` until it ends; returns this run's turns.

        `pace` says whether the source runs in real time (file at pace or microphone); barge-in
        needs real time and is off otherwise.
        """
        self._clients.connect()
        streaming = self.mode == "streaming"
        self._taking = TurnTaking(
            barge_in=self.barge_in and pace and streaming, preemptive=self.preemptive and streaming
        )
        self._run_results = []
        self._failure = None
        if isinstance(self.sink, PlayoutSink) and not pace:
            self.sink.realtime = False
        listening = self._listening = Listening(
            self._clients,
            self._tracer,
            recognition_config(self.settings),
            mode=self.mode,
            session_id=self.session_id,
            paced=pace,
            speech_end_hint_ms=speech_end_ms,
        )
        hints = streaming and self.settings.end_of_turn_hints
        self._hints = EndOfTurnHints(self._clients.llm, self.session_id, listening) if hints else None
        listening.start(source)
        try:
            while self._failure is None and not listening.finished:
                heard = await listening.next_event()
                if heard is not None:
                    await self._on_stt_event(*heard)
            if self._failure is None:
                held = self._taking.held
                if held is not None and self._taking.take_held(held.turn_id) is not None:
                    await self._discard(held)
                pending = [t.task for t in self._turns if t.task is not None and not t.task.done()]
                while pending and self._failure is None:
                    await asyncio.wait(pending, return_when=asyncio.FIRST_EXCEPTION)
                    pending = [t.task for t in self._turns if t.task is not None and not t.task.done()]
            if self._failure is not None:
                raise self._failure
        finally:
            listening.close()
            await self._discards.settle()
            if self._hints is not None:
                await self._hints.close()
            for turn in self._turns:
                if turn.task is not None and not turn.task.done():
                    turn.cancel_calls()
                    turn.task.cancel()
                    with contextlib.suppress(BaseException):
                        await turn.task
                if not turn.done.is_set():
                    self._abort(turn, RuntimeError("conversation run ended"))
            self._turns = []
            self._taking.reset()
        return sorted(self._run_results, key=lambda r: r.utterance_index)

    async def close(self) -> None:
        """End the conversation: cancel what still runs, forget the LLM session, close the channels."""
        for turn in self._turns:
            turn.cancel_calls()
            if turn.task is not None:
                turn.task.cancel()
        await self._discards.settle()
        if self._clients.connected:
            with contextlib.suppress(grpc.RpcError):
                await self._clients.llm.ResetSession(llm_pb2.ResetSessionRequest(session_id=self.session_id), timeout=5)
        self._history.clear()
        await self._clients.close()

    async def __aenter__(self) -> Conversation:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ----------------------------------------------------------------- turn-taking steps

    async def _on_stt_event(self, stream: SttStream, event: SttEvent) -> None:
        if (ui_event := ui_event_of(event)) is not None:
            notify(self.listener, ui_event)
        assert self._listening is not None
        steps = self._taking.decide(event.event, event.text)
        if self._hints is not None:
            self._hints.on_event(stream, event, holds=any(step.action is Action.HOLD for step in steps))
        for step in steps:
            current = self._taking.current
            if step.action is Action.INTERRUPT and current is not None and current.turn_id == step.turn_id:
                await self._interrupt(current)
            elif step.action in (Action.HOLD, Action.REPLY):
                self._start_turn(stream, event, speculative=step.action is Action.HOLD)
                stream.answered = stream.answered or step.action is Action.REPLY
            elif step.action is Action.RELEASE and (held := self._taking.take_held(step.turn_id)) is not None:
                self._confirm(held, event)
                stream.answered = True
            elif step.action is Action.DISCARD and (held := self._taking.take_held(step.turn_id)) is not None:
                await self._discard(held)
            elif step.action is Action.NEXT_TURN:
                self._listening.switch(stream, event)
                if self._hints is not None:
                    self._hints.next_turn()

    def _start_turn(self, stream: SttStream, event: SttEvent, *, speculative: bool) -> Turn:
        """A reply attempt in `stream`'s turn trace: speculative ones get their own child span."""
        assert self._listening is not None
        self._seq += 1
        transcript = event.text.strip()
        trace = TurnTrace(
            self._tracer,
            stream.root,
            speculative=speculative,
            transcript=transcript,
            utterance_index=event.utterance_index,
        )
        turn = Turn(
            self._seq,
            transcript,
            event.utterance_index,
            speculative=speculative,
            prev=self._taking.current,
            offset_ms=stream.offset_ms,
            trace=trace,
        )
        if speculative:
            turn.mark(Mark.SPEECH_END, self._listening.speech_end_t(turn.offset_ms, event))
            if self._hints is not None:
                turn.on_end_of_turn = self._hints.for_turn(stream, transcript)
        else:
            self._mark_final(turn, event)
            turn.confirmed.set()
        self._taking.started(turn)
        self._turns.append(turn)
        self._history.add(turn)
        turn.task = asyncio.create_task(self._speak(turn))
        turn.task.add_done_callback(self._turn_ended)
        return turn

    def _mark_final(self, turn: Turn, event: SttEvent) -> None:
        assert self._listening is not None
        turn.final_event = event
        turn.mark(Mark.STT_FINAL, attributes={"text": event.text, "from_candidate": event.from_candidate}, again=True)
        turn.mark(Mark.SPEECH_END, self._listening.speech_end_t(turn.offset_ms, event), again=True)

    def _confirm(self, turn: Turn, event: SttEvent) -> None:
        """FINAL confirmed the candidate: the held reply may play; its figures go on the turn's root span."""
        turn.trace.confirm(turn.timeline.held())
        turn.speculative = False
        turn.preemptive_used = True
        self._mark_final(turn, event)
        turn.confirmed.set()
        if turn.spoken.text:
            self._emit(EventKind.REPLY_DELTA, turn.spoken.text, turn.utterance_index)  # generated while held

    async def _speak(self, turn: Turn) -> None:
        try:
            if self.mode == "streaming":
                await speak_streaming(self._reply, turn)
            else:
                assert self._listening is not None
                await speak_sync(self._reply, turn, self._listening.clip(*utterance_span_ms(turn)))
            self._finish(turn)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            self._abort(turn, error)
            raise

    def _turn_ended(self, task: asyncio.Task[None]) -> None:
        """A turn that failed (e.g. its service went down) ends the run with its error at once."""
        if task.cancelled() or task.exception() is None:
            return
        if self._failure is None:
            self._failure = task.exception()
            if self._listening is not None:
                self._listening.wake()

    async def _interrupt(self, turn: Turn) -> None:
        """Barge-in: silence the agent, cancel its LLM and TTS calls, record what the user heard."""
        now = time.perf_counter()
        played = self.sink.stop() if turn.playing else 0
        turn.cancelled_rpcs = turn.cancel_calls()
        await turn.stop_task()
        turn.barge_in = True
        turn.heard = turn.spoken.heard(played)
        if turn.playing:
            turn.audio = self.sink.end()
        turn.mark(Mark.END, now, again=True)
        turn.trace.barge_in(played, turn.heard, turn.cancelled_rpcs)
        self._emit(EventKind.BARGE_IN, turn.heard, turn.utterance_index)
        await history.record_heard(self._clients.llm, self.session_id, turn)
        self._finish(turn)

    async def _discard(self, turn: Turn) -> None:
        """Throw away speculative work: cancel its calls; nothing was played."""
        turn.cancelled_rpcs = turn.cancel_calls()
        await turn.stop_task()
        self._discards.start(self._clients.llm, self.session_id, turn)  # DiscardTurn beside the loop
        self.speculation.discarded(turn)
        turn.llm_done.set()
        turn.done.set()
        self._taking.dropped(turn)
        self._turns = [t for t in self._turns if t is not turn]
        self._history.remove(turn)
        self._emit(EventKind.DISCARDED, turn.transcript, turn.utterance_index)

    def _abort(self, turn: Turn, error: BaseException) -> None:
        if turn.done.is_set():
            return
        if turn.playing:
            self.sink.stop()
            self.sink.end()
        turn.fail(error)

    def _finish(self, turn: Turn) -> None:
        if turn.done.is_set():
            return
        result = turn.finish(self.mode, self.session_id)
        self.speculation.kept(turn)
        self.results.append(result)
        self._run_results.append(result)
        self._emit(EventKind.TURN, result.transcript, turn.utterance_index, result)
