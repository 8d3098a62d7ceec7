"""gRPC servicer for voice.llm.v1.LanguageModel: validate, queue on the model worker, stream.

Turn bookkeeping (documented behaviour):
* A finished turn stores the new messages and the whole reply in the session.
* A turn cancelled while generating stores the new messages and an EMPTY assistant reply
  (the "interrupted" marker): the partial text is not kept as if complete. The client then
  records what the user actually heard with RecordHeardReply, which replaces that marker.
* A turn cancelled while still queued stores nothing (the model never saw it).
* RecordHeardReply with empty heard_text stores an empty assistant reply (heard nothing).
* A turn sent with `turn_id` can be thrown away with DiscardTurn (speculative work the user talked
  over): it waits for the session's in-flight and queued generations to settle, then removes the
  turn's messages (complete, interrupted or none) and trims the KV cache to the kept history.
  Only the session's latest turn can be discarded (FAILED_PRECONDITION otherwise: a later reply
  was conditioned on it). The id is remembered: a Generate of that turn arriving later is refused
  and one already running stores nothing.
* History that no longer fits n_ctx - max_tokens loses its oldest turns (system prompt kept);
  the count is reported in GenerationSummary.dropped_messages.
* Sessions: created on first use, expire after --session-ttl-s idle; beyond --max-sessions the
  least recently used idle session is evicted (RESOURCE_EXHAUSTED only if all are busy).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc

from llm_service.engine import LanguageEngine, Message, Sampling
from llm_service.sessions import (
    LaterTurnError,
    PromptTooLongError,
    Session,
    SessionLimitError,
    SessionStore,
    TurnCounters,
    discard_turn,
    fit_history,
)
from llm_service.turn import (
    Delta,
    Failure,
    ModelState,
    Score,
    Turn,
    TurnStream,
    run_turn,
    span_attributes,
    summary_message,
)
from llm_service.validation import (
    Limits,
    RequestError,
    validate_history,
    validate_max_tokens,
    validate_messages,
    validate_prefill_text,
    validate_sampling,
    validate_session_id,
    validate_turn_id,
)
from service_runtime.admission import Admission
from service_runtime.engine_slot import EngineSlot
from service_runtime.telemetry import server_span
from service_runtime.worker import Cancelled, Job, ModelWorker, QueueFullError
from voice.llm.v1 import llm_pb2, llm_pb2_grpc

log = logging.getLogger("llm-service")
SERVICE_NAME = llm_pb2.DESCRIPTOR.services_by_name["LanguageModel"].full_name
_BUSY = "the model is busy: {active} replies running or waiting, limit {cap} (1 running + --max-queue waiting)"
_BUSY_PREFILL = (
    "the model is busy: {active} Prefill calls running or waiting, limit {cap} (1 + --max-queue); "
    "the words are read with the reply instead"
)

# How long RecordHeardReply / DiscardTurn wait for the session's in-flight turn (e.g. one being cancelled).
SETTLE_TIMEOUT_S = 30.0


@dataclass
class ServiceConfig:
    system_prompt: str
    limits: Limits
    sampling: Sampling
    session_ttl_s: float = 900.0
    max_sessions: int = 32
    max_queue: int = 4


class LanguageModelServicer(llm_pb2_grpc.LanguageModelServicer):
    def __init__(self, slot: EngineSlot[LanguageEngine], config: ServiceConfig, admission: Admission) -> None:
        self._slot = slot
        self.config = config
        # Calls that need the model: one runs, --max-queue wait, counted apart for replies (Generate) and
        # for reading the user's words early (Prefill, optional): with one shared cap, 4 conversations'
        # Prefills got replies refused (bench/RESULTS.md). Refused at the door (before a session is
        # created); the worker's own bound (both kinds) also holds while a cancelled generation
        # finishes its last token.
        self.model_calls = admission.gate(SERVICE_NAME, ["Generate"], 1 + config.max_queue, _BUSY)
        self.prefill_calls = admission.gate(SERVICE_NAME, ["Prefill"], 1 + config.max_queue, _BUSY_PREFILL)
        self.worker = ModelWorker("llm-worker", 2 * config.max_queue + 1)
        self.sessions = SessionStore(config.session_ttl_s, config.max_sessions, on_evict=self._forget)
        self.counters = TurnCounters()
        self._model_state = ModelState(self.sessions, self.counters, Message("system", config.system_prompt))

    def _forget(self, session_id: str) -> None:
        engine = self._slot.engine
        if engine is not None:
            engine.forget(session_id)

    # ---- Generate ------------------------------------------------------------------------
    async def Generate(
        self, request: llm_pb2.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[llm_pb2.GenerateResponse]:
        arrived = time.perf_counter()
        engine = await self._slot.get(context)
        session_id = request.session_id
        turn_id = request.turn_id
        with server_span("llm.generate", context, session_id=session_id or None, turn_id=turn_id or None) as span:
            try:
                validate_session_id(session_id)
                validate_turn_id(turn_id, session_id)
                session = self.sessions.get(session_id) if session_id else None
                history = validate_history(request.history, session_id)
                has_history = bool(history) or (session is not None and len(session.messages) > 1)
                messages = validate_messages(request.messages, has_history)
                max_tokens = validate_max_tokens(request.max_tokens, self.config.limits)
                sampling = validate_sampling(
                    request.sampling if request.HasField("sampling") else None, self.config.sampling
                )
                score = request.score_end_of_turn
                if score and (not messages or messages[-1].role != "user"):
                    raise RequestError(
                        "INVALID_ARGUMENT", "score_end_of_turn needs the last message to be the user's (role 'user')"
                    )
                if session_id:
                    session, _ = self.sessions.get_or_create(session_id, self.config.system_prompt)
                if session is not None and turn_id in session.discarded:
                    raise RequestError(
                        "FAILED_PRECONDITION",
                        f"turn {turn_id!r} of session {session_id!r} was discarded; use a new turn_id",
                    )
            except RequestError as error:
                await context.abort(getattr(grpc.StatusCode, error.code), str(error))
            except SessionLimitError as error:
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(error))

            stream = TurnStream(session)
            turn = Turn(session, messages, max_tokens, sampling, turn_id, score, history)
            job = Job(lambda j: run_turn(j, engine, self._model_state, turn, stream.emit), on_done=stream.finished)
            job.submitted_at = arrived
            try:
                self.worker.submit(job)
            except QueueFullError as error:
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(error))
            if session is not None:
                session.pending.append(stream.done)

            first_delta_at: float | None = None
            try:
                while True:
                    item = await stream.items.get()
                    if isinstance(item, Score):
                        span.set_attribute("end_of_turn_probability", item.probability)
                        yield llm_pb2.GenerateResponse(end_of_turn_probability=item.probability)
                    elif isinstance(item, Delta):
                        if first_delta_at is None:
                            first_delta_at = time.perf_counter()
                            span.add_event("first_token")
                        yield llm_pb2.GenerateResponse(text=item.text)
                    elif isinstance(item, Failure):
                        await context.abort(getattr(grpc.StatusCode, item.code), item.message)
                    else:
                        summary = summary_message(item, job.queue_wait_s, arrived, first_delta_at)
                        span.set_attributes(span_attributes(summary, session_id, item.result.finish_reason))
                        yield llm_pb2.GenerateResponse(final=summary)
                        return
            except asyncio.CancelledError:
                span.add_event("cancelled")
                self.worker.cancel(job)
                raise
            finally:
                if not job.finished.is_set():
                    self.worker.cancel(job)

    # ---- sessions ----------------------------------------------------------------------------
    async def _known_session(self, session_id: str, context: grpc.aio.ServicerContext) -> Session:
        try:
            validate_session_id(session_id, required=True)
        except RequestError as error:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        session = self.sessions.get(session_id)
        if session is None:
            await context.abort(
                grpc.StatusCode.NOT_FOUND, f"session {session_id!r} is unknown (never used, reset or expired)"
            )
        assert session is not None
        return session

    async def ResetSession(
        self, request: llm_pb2.ResetSessionRequest, context: grpc.aio.ServicerContext
    ) -> llm_pb2.ResetSessionResponse:
        await self._known_session(request.session_id, context)
        dropped = self.sessions.reset(request.session_id)
        if dropped is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"session {request.session_id!r} is unknown")
        return llm_pb2.ResetSessionResponse(dropped_messages=dropped or 0)

    async def RecordHeardReply(
        self, request: llm_pb2.RecordHeardReplyRequest, context: grpc.aio.ServicerContext
    ) -> llm_pb2.RecordHeardReplyResponse:
        session = await self._known_session(request.session_id, context)
        if session.pending:  # let an in-flight (e.g. just cancelled) turn commit first
            await asyncio.wait(list(session.pending), timeout=SETTLE_TIMEOUT_S)
        with self.sessions.lock:
            last = session.messages[-1] if len(session.messages) > 1 else None
            if last is None or last.role != "assistant":
                role = last.role if last else "none"
                failed = f"the last message of session {request.session_id!r} is {role!r}, not an assistant reply"
            else:
                failed = ""
                session.messages[-1] = Message("assistant", request.heard_text, last.turn_id)
        if failed:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, failed)
        if last is not None and last.content != request.heard_text:
            engine = self._slot.engine
            if engine is not None:
                engine.drop_reply(request.session_id)
        return llm_pb2.RecordHeardReplyResponse(stored_text=request.heard_text)

    async def DiscardTurn(
        self, request: llm_pb2.DiscardTurnRequest, context: grpc.aio.ServicerContext
    ) -> llm_pb2.DiscardTurnResponse:
        session_id, turn_id = request.session_id, request.turn_id
        with server_span("llm.discard_turn", context, session_id=session_id or None, turn_id=turn_id or None) as span:
            try:
                validate_turn_id(turn_id, required=True)
            except RequestError as error:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
            session = await self._known_session(session_id, context)
            # Let in-flight and queued generations (the turn's own, usually just cancelled) commit first.
            loop = asyncio.get_running_loop()
            deadline = loop.time() + SETTLE_TIMEOUT_S
            while session.pending:
                span.add_event("waiting_for_generation")
                if loop.time() >= deadline:
                    await context.abort(
                        grpc.StatusCode.UNAVAILABLE,
                        f"session {session_id!r} is still generating after {SETTLE_TIMEOUT_S:g} s; retry later",
                    )
                await asyncio.wait(list(session.pending), timeout=deadline - loop.time())
            if self.sessions.get(session_id) is not session:
                await context.abort(grpc.StatusCode.NOT_FOUND, f"session {session_id!r} was reset or expired")
            failed = ""
            removed, kept = 0, list[Message]()
            with self.sessions.lock:
                try:
                    removed, kept = discard_turn(session, turn_id)
                except LaterTurnError as error:
                    failed = str(error)
            if failed:
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION, failed)
            if removed:
                engine = self._slot.engine
                if engine is not None:
                    engine.discard_after(session_id, kept)
            span.set_attribute("removed_messages", removed)
            return llm_pb2.DiscardTurnResponse(removed_messages=removed)

    # ---- Prefill -------------------------------------------------------------------------
    async def Prefill(
        self, request: llm_pb2.PrefillRequest, context: grpc.aio.ServicerContext
    ) -> llm_pb2.PrefillResponse:
        arrived = time.perf_counter()
        engine = await self._slot.get(context)
        session_id = request.session_id
        with server_span("llm.prefill", context, session_id=session_id or None) as span:
            try:
                validate_session_id(session_id, required=True)
                text = validate_prefill_text(request.text)
                session, _ = self.sessions.get_or_create(session_id, self.config.system_prompt)
            except RequestError as error:
                await context.abort(getattr(grpc.StatusCode, error.code), str(error))
            except SessionLimitError as error:
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(error))
            with self.sessions.lock:
                session.prefills += 1
                number = session.prefills

            def run() -> llm_pb2.PrefillResponse:  # on the model thread
                started = time.perf_counter()
                wait_ms = (started - arrived) * 1000
                if session.prefills != number:  # a newer Prefill of this session answers instead
                    return llm_pb2.PrefillResponse(superseded=True, queue_wait_ms=wait_ms)
                with self.sessions.lock:
                    system, history = session.messages[0], list(session.messages[1:])
                new = [Message("user", text)]
                limit = self.config.limits.default_max_tokens
                kept, _, _ = fit_history([system], history, new, engine.count_tokens, engine.n_ctx, limit)
                result = engine.prefill([system, *kept, *new], session_id)
                return llm_pb2.PrefillResponse(
                    end_of_turn_probability=result.end_of_turn_probability,
                    prompt_tokens=result.prompt_tokens,
                    cached_prompt_tokens=result.cached_prompt_tokens,
                    prefill_ms=(time.perf_counter() - started) * 1000,
                    queue_wait_ms=wait_ms,
                )

            try:
                item = await self.worker.run(run)
            except QueueFullError as error:
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(error))
            except PromptTooLongError as error:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
            except Cancelled:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "the model worker stopped")
            except Exception as error:
                log.exception("prefill failed")
                await context.abort(grpc.StatusCode.INTERNAL, f"prefill failed: {error}")
            assert isinstance(item, llm_pb2.PrefillResponse)
            for key in ("end_of_turn_probability", "prompt_tokens", "cached_prompt_tokens", "prefill_ms"):
                span.set_attribute(key, getattr(item, key))
            span.set_attribute("superseded", item.superseded)
            return item

    async def GetSession(
        self, request: llm_pb2.GetSessionRequest, context: grpc.aio.ServicerContext
    ) -> llm_pb2.GetSessionResponse:
        engine = await self._slot.get(context)
        session = await self._known_session(request.session_id, context)
        with self.sessions.lock:
            messages = list(session.messages)
        tokens = await asyncio.to_thread(engine.count_tokens, messages)
        return llm_pb2.GetSessionResponse(
            messages=[llm_pb2.ChatMessage(role=m.role, content=m.content) for m in messages],
            history_tokens=tokens,
            context_tokens=engine.n_ctx,
        )

    async def GetStats(
        self, request: llm_pb2.GetStatsRequest, context: grpc.aio.ServicerContext
    ) -> llm_pb2.GetStatsResponse:
        burst = getattr(self._slot.engine, "burst", None)  # llama.cpp engines only
        return llm_pb2.GetStatsResponse(
            live_sessions=len(self.sessions),
            max_sessions=self.sessions.max_sessions,
            active_generations=self.worker.active,
            queued_generations=self.worker.queued,
            max_queued=self.config.max_queue,  # replies; Prefills have a cap of their own, the same size
            generations_total=self.counters.generations,
            kv_cache_hits_total=self.counters.cache_hits,
            kv_cache_misses_total=self.counters.cache_misses,
            burst_granted_total=burst.granted if burst else 0,
            burst_refused_busy_total=burst.refused_busy if burst else 0,
            burst_stalls_total=burst.stalls if burst else 0,
            burst_refused_shared_total=burst.refused_shared if burst else 0,
        )
