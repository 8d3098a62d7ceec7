"""Per-stream recognition (no gRPC): PCM in, events out.

`StreamingRecognizer.feed(pcm)` resamples to 16 kHz, runs the VAD frame by frame and drives the
`UtteranceTracker`; decodes run on the process-wide model worker (one model call at a time,
shared by all sessions) as asyncio tasks whose results come back as events on `events`.
"""

from __future__ import annotations

import asyncio
import enum
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import soxr

from service_runtime.worker import Cancelled, ModelWorker
from stt_service.endpointing import Action, ActionKind, EndpointConfig, UtteranceTracker
from stt_service.engine import SAMPLE_RATE, SpeechEngine, Transcript
from stt_service.vad import FRAME, SileroVad


class EventKind(enum.Enum):
    SPEECH_STARTED = 1
    INTERIM = 2
    CANDIDATE_FINAL = 3
    CANDIDATE_RETRACTED = 4
    FINAL = 5


@dataclass(frozen=True)
class Event:
    kind: EventKind
    utterance: int
    text: str = ""
    start_ms: int = 0
    end_ms: int = 0
    position_ms: int = 0
    decode_ms: float = 0.0
    from_candidate: bool = False
    endpoint_ms: int = 0
    decided_at: float = 0.0  # perf_counter() when the FINAL was decided (for final latency)


class _Audio:
    """Growing 16 kHz buffer addressed in absolute samples; old audio is dropped with `trim`."""

    def __init__(self) -> None:
        self._data = np.zeros(SAMPLE_RATE * 4, dtype=np.float32)
        self._base = 0  # absolute index of _data[0]
        self._len = 0

    @property
    def end(self) -> int:
        return self._base + self._len

    def append(self, samples: np.ndarray) -> None:
        need = self._len + len(samples)
        if need > len(self._data):
            grown = np.zeros(max(need, 2 * len(self._data)), dtype=np.float32)
            grown[: self._len] = self._data[: self._len]
            self._data = grown
        self._data[self._len : need] = samples
        self._len = need

    def slice(self, start: int, end: int) -> np.ndarray:
        start, end = max(start, self._base), min(end, self.end)
        return self._data[start - self._base : max(start, end) - self._base].copy()

    def trim(self, keep_from: int) -> None:
        drop = min(max(0, keep_from - self._base), self._len)
        if drop >= SAMPLE_RATE * 2:  # move memory only now and then
            self._data[: self._len - drop] = self._data[drop : self._len]
            self._len -= drop
            self._base += drop


def pcm16_to_float(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0


def _ms(samples: int) -> int:
    return samples * 1000 // SAMPLE_RATE


def _join(parts: list[str]) -> str:
    return " ".join(p for p in parts if p).strip()


class StreamingRecognizer:
    def __init__(
        self,
        engine: SpeechEngine,
        worker: ModelWorker,
        vad: SileroVad,
        config: EndpointConfig,
        language: str,
        sample_rate: int,
    ) -> None:
        self.config = config
        self.language = language
        self.events: asyncio.Queue[Event | BaseException | None] = asyncio.Queue()
        self._engine = engine
        self._worker = worker
        self._vad = vad.stream()
        self._tracker = UtteranceTracker(config)
        self._audio = _Audio()
        self._resampler = (
            soxr.ResampleStream(sample_rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")
            if sample_rate != SAMPLE_RATE
            else None
        )
        self._cancelled = threading.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._candidate_tasks: dict[int, asyncio.Task[None]] = {}
        self._candidate_decode_ms: dict[int, float] = {}
        self._commits: dict[int, list[asyncio.Task[str]]] = {}
        self._interim_running = False
        # Statistics for the span / logs.
        self.decode_ms = 0.0
        self.utterances = 0
        self.first_speech_ms: int | None = None
        self.last_speech_end_ms: int | None = None

    @property
    def audio_s(self) -> float:
        return self._tracker.position / SAMPLE_RATE

    # ---- input -------------------------------------------------------------------------
    async def feed(self, pcm: bytes) -> None:
        samples = pcm16_to_float(pcm)
        if self._resampler is not None:
            samples = self._resampler.resample_chunk(samples)
        await self._process(samples)

    async def _process(self, samples: np.ndarray) -> None:
        if len(samples) == 0:
            return
        self._audio.append(samples)
        for prob in self._vad.push(samples):
            while self._tracker.blocked:
                await self._wait_candidate()
            self._handle(self._tracker.step(float(prob)))
        utt = self._tracker.utterance
        self._audio.trim(utt.decode_from if utt else self._tracker.position - self.config.pre_pad_ms * 16 - FRAME)

    async def _wait_candidate(self) -> None:
        utt = self._tracker.utterance
        assert utt is not None and utt.candidate is not None
        task = self._candidate_tasks.get(utt.candidate.id)
        if task is None:  # cannot happen: every candidate action starts its task
            self._handle(self._tracker.on_candidate(utt.candidate.id, ""))
            return
        await asyncio.shield(task)

    def hint(self, text: str, probability: float) -> None:
        """The client's end-of-turn probability for a candidate text (may end the utterance now)."""
        self._handle(self._tracker.on_hint(text, probability))

    async def finish(self) -> None:
        """Client half-closed: flush audio, finalize speech in progress, end the event stream."""
        if self._resampler is not None:
            await self._process(self._resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True))
        utt = self._tracker.utterance
        if utt is not None and utt.candidate is not None and utt.candidate.id in self._candidate_tasks:
            await asyncio.shield(self._candidate_tasks[utt.candidate.id])  # may finalize via on_candidate
        utt = self._tracker.utterance
        if utt is not None:
            cand = utt.candidate
            decided = time.perf_counter()
            self._tracker.finish()
            if cand is not None and cand.text is not None and cand.end == utt.end:
                text, decode_ms, from_candidate = cand.text, 0.0, True
            else:
                window_end = min(self._tracker.position, utt.end + self.config.post_pad_ms * 16)
                prefix = [await t for t in self._commits.get(utt.index, [])]
                tail = await self._decode(self._audio.slice(utt.decode_from, window_end))
                text, decode_ms, from_candidate = _join([*prefix, tail.text]), tail.decode_ms, False
            self._emit_final(utt.index, text, utt.start, utt.end, decode_ms, from_candidate, 0, decided)
        self.events.put_nowait(None)

    def close(self) -> None:
        """Stop all work of this session now (client cancel or error)."""
        self._cancelled.set()
        for task in list(self._tasks):
            task.cancel()

    # ---- decodes -----------------------------------------------------------------------
    async def _decode(self, audio: np.ndarray) -> Transcript:
        if len(audio) < FRAME:
            return Transcript("")
        language = self.language
        engine = self._engine
        result = await self._worker.run(lambda: engine.transcribe(audio, language), self._cancelled)
        self.decode_ms += result.decode_ms
        return result

    def _spawn(self, coro: object, name: str) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(self._guard(coro))  # type: ignore[arg-type]
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _guard(self, coro: object) -> None:
        try:
            await coro  # type: ignore[misc]
        except Cancelled:
            return
        except Exception as error:  # a decode failed: end the stream with the error
            self.events.put_nowait(error)

    async def _candidate(self, action: Action, audio: np.ndarray) -> None:
        try:
            prefix = [await t for t in self._commits.get(action.utterance, [])]
            tail = await self._decode(audio)
            self._candidate_decode_ms[action.candidate_id] = tail.decode_ms
            text = _join([*prefix, tail.text])
        except (asyncio.CancelledError, Cancelled):
            raise
        except Exception:
            self._handle(self._tracker.on_candidate(action.candidate_id, ""))  # never leave the tracker blocked
            raise
        self._handle(self._tracker.on_candidate(action.candidate_id, text))

    async def _commit(self, audio: np.ndarray) -> str:
        return (await self._decode(audio)).text

    async def _interim(self, action: Action, audio: np.ndarray) -> None:
        try:
            commits = self._commits.get(action.utterance, [])
            if not all(t.done() for t in commits):
                return
            tail = await self._decode(audio)
        finally:
            self._interim_running = False
        utt = self._tracker.utterance
        if utt is None or utt.index != action.utterance or (utt.candidate is not None and utt.candidate.emitted):
            return  # stale: the utterance ended or a candidate superseded this hypothesis
        text = _join([*(t.result() for t in commits), tail.text])
        if text:
            self.events.put_nowait(
                Event(
                    EventKind.INTERIM,
                    action.utterance,
                    text,
                    _ms(utt.start),
                    _ms(action.speech_end),
                    _ms(self._tracker.position),
                    tail.decode_ms,
                )
            )

    # ---- tracker actions ---------------------------------------------------------------
    def _handle(self, actions: list[Action]) -> None:
        for a in actions:
            kind = a.kind
            if kind is ActionKind.SPEECH_STARTED:
                if self.first_speech_ms is None:
                    self.first_speech_ms = _ms(a.start)
                self._put(EventKind.SPEECH_STARTED, a)
            elif kind is ActionKind.DECODE_INTERIM:
                if not self._worker.busy and not self._interim_running:
                    self._interim_running = True
                    self._spawn(self._interim(a, self._audio.slice(a.start, a.end)), f"interim-{a.utterance}")
            elif kind is ActionKind.DECODE_CANDIDATE:
                audio = self._audio.slice(a.start, a.end)  # now: the buffer may be trimmed before the task runs
                self._candidate_tasks = {
                    a.candidate_id: self._spawn(self._candidate(a, audio), f"candidate-{a.candidate_id}")
                }
            elif kind is ActionKind.DECODE_COMMIT:
                commit: asyncio.Task[str] = asyncio.ensure_future(self._commit(self._audio.slice(a.start, a.end)))
                self._tasks.add(commit)
                commit.add_done_callback(self._tasks.discard)
                self._commits.setdefault(a.utterance, []).append(commit)
            elif kind is ActionKind.CANDIDATE:
                self._put(EventKind.CANDIDATE_FINAL, a, a.text, self._candidate_decode_ms.get(a.candidate_id, 0.0))
            elif kind is ActionKind.RETRACT:
                self._put(EventKind.CANDIDATE_RETRACTED, a)
            elif kind is ActionKind.FINAL:
                self._emit_final(a.utterance, a.text, a.start, a.end, 0.0, True, a.endpoint_ms, time.perf_counter())

    def _put(self, kind: EventKind, a: Action, text: str = "", decode_ms: float = 0.0) -> None:
        self.events.put_nowait(Event(kind, a.utterance, text, _ms(a.start), _ms(a.end), _ms(a.position), decode_ms))

    def _emit_final(
        self,
        index: int,
        text: str,
        start: int,
        end: int,
        decode_ms: float,
        from_candidate: bool,
        endpoint_ms: int,
        decided_at: float,
    ) -> None:
        self._commits.pop(index, None)
        self.utterances += 1
        self.last_speech_end_ms = _ms(end)
        self.events.put_nowait(
            Event(
                EventKind.FINAL,
                index,
                text,
                _ms(start),
                _ms(end),
                _ms(self._tracker.position),
                decode_ms,
                from_candidate,
                endpoint_ms,
                decided_at,
            )
        )
