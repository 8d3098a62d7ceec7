"""One Generate turn on the model thread (no gRPC calls here): fit the history, generate, commit the turn;
and the turn's GenerationSummary and span figures.

What the turn produces goes to `emit` as items: `Score` (when asked), `Delta`s, then one `Final`
or a `Failure` (a status name and a message, mapped to a gRPC status by the servicer).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llm_service.engine import FinishReason, GenerationResult, LanguageEngine, Message, Sampling
from llm_service.sessions import PromptTooLongError, Session, SessionStore, TurnCounters, fit_history, holds_prefix
from service_runtime.worker import Job
from voice.llm.v1 import llm_pb2

log = logging.getLogger("llm-service")

_FINISH = {
    FinishReason.STOP: llm_pb2.STOP,
    FinishReason.LENGTH: llm_pb2.LENGTH,
    FinishReason.CANCELLED: llm_pb2.FINISH_REASON_UNSPECIFIED,
}


@dataclass
class Delta:
    text: str


@dataclass
class Score:
    probability: float


@dataclass
class Final:
    result: GenerationResult
    dropped: int
    cache_hit: bool = False


@dataclass
class Failure:
    code: str  # a grpc.StatusCode name, e.g. "INVALID_ARGUMENT"
    message: str


TurnItem = Delta | Score | Final | Failure


class TurnStream:
    """Carries a turn's items from the model thread to its RPC on the event loop."""

    def __init__(self, session: Session | None) -> None:
        self._loop = asyncio.get_running_loop()
        self._session = session
        self.items: asyncio.Queue[TurnItem] = asyncio.Queue()
        self.done: asyncio.Future[None] = self._loop.create_future()  # the job has finished

    def emit(self, item: TurnItem) -> None:
        """From the model thread."""
        self._post(self.items.put_nowait, item)

    def finished(self) -> None:
        """From the model thread: the job ended (ran, failed or was dropped); the session stops waiting for it."""
        self._post(self._settle)

    def _settle(self) -> None:
        if not self.done.done():
            self.done.set_result(None)
        if self._session is not None and self.done in self._session.pending:
            self._session.pending.remove(self.done)

    def _post(self, fn: Callable[..., None], *args: object) -> None:
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop is closed (shutdown)
            pass


@dataclass(frozen=True)
class ModelState:
    """What the turns of one server share: its sessions, counters and default system prompt."""

    sessions: SessionStore
    counters: TurnCounters
    default_system: Message


@dataclass(frozen=True)
class Turn:
    session: Session | None
    new: list[Message]
    max_tokens: int
    sampling: Sampling
    turn_id: str = ""
    score: bool = False
    client_history: list[Message] | None = None


def run_turn(job: Job, engine: LanguageEngine, state: ModelState, turn: Turn, emit: Callable[[TurnItem], None]) -> None:
    """Runs on the worker thread: fit history, generate, commit the turn (tagged with `turn_id`)."""
    if job.cancelled.is_set():
        return
    session, new, turn_id = turn.session, turn.new, turn.turn_id
    cache_hit = False
    if session is not None:
        with state.sessions.lock:
            system = session.messages[0]
            held = list(session.messages[1:])
            if turn.client_history is not None:  # the client's history is authoritative
                session.messages = [system, *turn.client_history]
            history = list(session.messages[1:])
        cache_hit = holds_prefix(held, history)
        if new and new[0].role == "system":
            system, new = new[0], new[1:]
    else:
        system = state.default_system
        if new[0].role == "system":
            system, new = new[0], new[1:]
        # The trailing messages after the last assistant reply are this turn; the rest is history.
        last_reply = max((i for i, m in enumerate(new) if m.role == "assistant"), default=-1)
        history, new = new[: last_reply + 1], new[last_reply + 1 :]
    try:
        kept, dropped, _ = fit_history([system], history, new, engine.count_tokens, engine.n_ctx, turn.max_tokens)
    except PromptTooLongError as error:
        emit(Failure("INVALID_ARGUMENT", str(error)))
        return
    cache_key = session.id if session is not None else None
    try:
        if turn.score:  # the same KV state then serves the reply (only the prompt's tail is left to read)
            emit(Score(engine.prefill([system, *kept, *new], cache_key).end_of_turn_probability))
        result = engine.generate(
            [system, *kept, *new],
            turn.max_tokens,
            turn.sampling,
            cache_key,
            lambda text: emit(Delta(text)),
            job.cancelled.is_set,
        )
    except Exception as error:
        log.exception("generation failed")
        emit(Failure("INTERNAL", f"generation failed: {error}"))
        return
    if session is not None:
        reply = "" if result.finish_reason == FinishReason.CANCELLED else result.text
        stored = [Message(m.role, m.content, turn_id) for m in new]
        with state.sessions.lock:
            if not turn_id or turn_id not in session.discarded:  # discarded meanwhile: store nothing
                session.messages = [system, *kept, *stored, Message("assistant", reply, turn_id)]
    state.counters.count(has_history=bool(history), cache_hit=cache_hit)
    emit(Final(result, dropped, cache_hit))


def summary_message(
    item: Final, queue_wait_s: float, arrived: float, first_delta_at: float | None
) -> llm_pb2.GenerationSummary:
    """The turn's GenerationSummary; time to first token counts from the request's arrival."""
    r = item.result
    first = first_delta_at or r.first_token_at
    ttft_ms = (first - arrived) * 1000 if first else 0.0
    tps = 0.0
    if r.first_token_at is not None and r.completion_tokens > 1 and r.ended_at > r.first_token_at:
        tps = (r.completion_tokens - 1) / (r.ended_at - r.first_token_at)
    return llm_pb2.GenerationSummary(
        finish_reason=_FINISH[r.finish_reason],
        prompt_tokens=r.prompt_tokens,
        cached_prompt_tokens=r.cached_prompt_tokens,
        completion_tokens=r.completion_tokens,
        time_to_first_token_ms=ttft_ms,
        tokens_per_second=tps,
        queue_wait_ms=queue_wait_s * 1000,
        dropped_messages=item.dropped,
        text=r.text,
        kv_cache_hit=item.cache_hit,
    )


def span_attributes(s: llm_pb2.GenerationSummary, session_id: str, finish: FinishReason) -> dict[str, Any]:
    """The `llm.generate` span's latency and token figures."""
    return {
        "queue_wait_ms": s.queue_wait_ms,
        "prompt_tokens": s.prompt_tokens,
        "cached_prompt_tokens": s.cached_prompt_tokens,
        "completion_tokens": s.completion_tokens,
        "ttft_ms": s.time_to_first_token_ms,
        "tokens_per_second": s.tokens_per_second,
        "session_id": session_id,
        "dropped_messages": s.dropped_messages,
        "finish_reason": finish.value,
        "kv_cache_hit": s.kv_cache_hit,
    }
