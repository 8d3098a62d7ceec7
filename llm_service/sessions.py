"""Server-kept conversations: history, expiry, LRU cap and fitting history into the context.

Plain Python (no gRPC, no model): the servicer and the worker share one `SessionStore`; all
access goes through its lock because the worker thread commits finished turns.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from llm_service.engine import Message

SESSION_ID = re.compile(r"^[A-Za-z0-9_.:\-]{1,128}$")
# Ids of discarded turns remembered per session (a late Generate of such a turn is refused).
DISCARDED_TURNS_KEPT = 256


class SessionLimitError(RuntimeError):
    """All `max_sessions` sessions are busy: none can be evicted."""


class LaterTurnError(RuntimeError):
    """DiscardTurn on a turn that is not the session's latest one."""


class PromptTooLongError(ValueError):
    def __init__(self, prompt_tokens: int, budget: int, n_ctx: int, max_tokens: int) -> None:
        super().__init__(
            f"prompt is {prompt_tokens} tokens after dropping all older history; at most {budget} fit "
            f"(context {n_ctx} tokens minus max_tokens {max_tokens}). Shorten the messages or lower max_tokens"
        )
        self.prompt_tokens = prompt_tokens
        self.budget = budget


@dataclass
class Session:
    id: str
    # Oldest first; messages[0] is the system prompt.
    messages: list[Message]
    last_used: float
    # Generate calls of this session submitted and not finished (their completion futures).
    pending: list[asyncio.Future[None]] = field(default_factory=list)
    # Turn ids discarded by DiscardTurn, oldest first (bounded by DISCARDED_TURNS_KEPT).
    discarded: OrderedDict[str, None] = field(default_factory=OrderedDict)
    # Prefill calls submitted so far; a queued Prefill that is not the latest is skipped.
    prefills: int = 0

    @property
    def busy(self) -> bool:
        return bool(self.pending)


class SessionStore:
    def __init__(
        self,
        ttl_s: float,
        max_sessions: int,
        on_evict: Callable[[str], None] = lambda _id: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s = ttl_s
        self.max_sessions = max_sessions
        self._on_evict = on_evict
        self._clock = clock
        self._sessions: OrderedDict[str, Session] = OrderedDict()  # LRU order: oldest first
        self.lock = threading.RLock()
        self.evicted_total = 0
        self.expired_total = 0

    def __len__(self) -> int:
        with self.lock:
            self.expire()
            return len(self._sessions)

    def expire(self) -> list[str]:
        """Drop idle sessions unused for `ttl_s`."""
        now = self._clock()
        gone: list[str] = []
        with self.lock:
            for sid, session in list(self._sessions.items()):
                if not session.busy and now - session.last_used > self.ttl_s:
                    del self._sessions[sid]
                    gone.append(sid)
            self.expired_total += len(gone)
        for sid in gone:
            self._on_evict(sid)
        return gone

    def get(self, session_id: str) -> Session | None:
        with self.lock:
            self.expire()
            return self._sessions.get(session_id)

    def get_or_create(self, session_id: str, system_prompt: str) -> tuple[Session, bool]:
        """The session (touched), creating it on first use; evicts the LRU idle one when full."""
        evicted: str | None = None
        with self.lock:
            self.expire()
            session = self._sessions.get(session_id)
            created = session is None
            if session is None:
                if len(self._sessions) >= self.max_sessions:
                    victim = next((s for s in self._sessions.values() if not s.busy), None)
                    if victim is None:
                        raise SessionLimitError(
                            f"all {self.max_sessions} sessions are busy generating; retry later or raise --max-sessions"
                        )
                    del self._sessions[victim.id]
                    self.evicted_total += 1
                    evicted = victim.id
                session = Session(session_id, [Message("system", system_prompt)], self._clock())
                self._sessions[session_id] = session
            session.last_used = self._clock()
            self._sessions.move_to_end(session_id)
        if evicted is not None:
            self._on_evict(evicted)
        return session, created

    def reset(self, session_id: str) -> int | None:
        """Forget a session; the number of messages it held, None if unknown."""
        with self.lock:
            session = self._sessions.pop(session_id, None)
        if session is None:
            return None
        self._on_evict(session_id)
        return len(session.messages)

    def ids(self) -> list[str]:
        with self.lock:
            return list(self._sessions)


def discard_turn(session: Session, turn_id: str) -> tuple[int, list[Message]]:
    """Remove the messages stored for `turn_id` (the caller holds the store lock).

    Only the latest turn can go: LaterTurnError when a message of another turn follows one of it
    (a later reply was conditioned on it). Remembers the id, so a generation of that turn that
    commits later stores nothing. Returns (messages removed, history kept).
    """
    tagged = [i for i, m in enumerate(session.messages) if i > 0 and m.turn_id == turn_id]
    if tagged:
        later = [m for m in session.messages[tagged[0] :] if m.turn_id != turn_id]
        if later:
            raise LaterTurnError(
                f"turn {turn_id!r} is not the latest of session {session.id!r}: {len(later)} later message(s) "
                f"of other turns follow it; only the latest turn can be discarded"
            )
        session.messages = session.messages[: tagged[0]]
    session.discarded[turn_id] = None
    session.discarded.move_to_end(turn_id)
    while len(session.discarded) > DISCARDED_TURNS_KEPT:
        session.discarded.popitem(last=False)
    return len(tagged), list(session.messages)


def holds_prefix(held: Sequence[Message], history: Sequence[Message]) -> bool:
    """True when this replica held a non-empty start of `history` (its KV cache then covers it).

    The last held reply may differ from the client's copy (a barge-in cut it to what was heard):
    the cache still covers everything before it.
    """
    if not held or not history or len(held) > len(history):
        return False
    last = len(held) - 1
    same = [(m.role, m.content) for m in held[:last]] == [(m.role, m.content) for m in history[:last]]
    if held[last].role == "assistant":
        return same and history[last].role == "assistant"
    return same and (held[last].role, held[last].content) == (history[last].role, history[last].content)


@dataclass
class TurnCounters:
    """Generate calls run by this replica and whether their history was found in its KV cache."""

    generations: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, has_history: bool, cache_hit: bool) -> None:
        with self._lock:
            self.generations += 1
            if has_history:
                if cache_hit:
                    self.cache_hits += 1
                else:
                    self.cache_misses += 1


def split_turns(history: Sequence[Message]) -> list[list[Message]]:
    """Group non-system history into turns: a message and the replies up to the next user message."""
    turns: list[list[Message]] = []
    for message in history:
        if message.role == "user" or not turns:
            turns.append([message])
        else:
            turns[-1].append(message)
    return turns


def fit_history(
    system: Sequence[Message],
    history: Sequence[Message],
    new: Sequence[Message],
    count_tokens: Callable[[Sequence[Message]], int],
    n_ctx: int,
    max_tokens: int,
    headroom: float = 0.25,
) -> tuple[list[Message], int, int]:
    """Drop the oldest turns of `history` so that system + history + new + max_tokens fit n_ctx.

    Returns (kept history, messages dropped, prompt tokens). Once dropping is needed, it drops
    down to (1 - headroom) of the budget so the next turns do not drop (and re-read) again.
    The system prompt and the new messages are never dropped (PromptTooLongError instead).
    """
    budget = n_ctx - max_tokens
    turns = split_turns(history)
    kept = [m for turn in turns for m in turn]
    tokens = count_tokens([*system, *kept, *new])
    if tokens <= budget:
        return kept, 0, tokens
    target = int(budget * (1.0 - headroom))
    dropped = 0
    while turns and tokens > target:
        dropped += len(turns.pop(0))
        kept = [m for turn in turns for m in turn]
        tokens = count_tokens([*system, *kept, *new])
    if tokens > budget:
        raise PromptTooLongError(tokens, budget, n_ctx, max_tokens)
    return kept, dropped, tokens
