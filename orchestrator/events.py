"""Typed UI events: what a conversation tells its listener while it runs.

A listener is any callable taking one `ConversationEvent`; it runs on the event loop and must
not block. For an async consumer (a websocket handler), pass an `EventQueue` as the listener and
iterate it:

    events = EventQueue()
    conversation = Conversation(addresses, listener=events)
    async for event in events:            # ends after events.close()
        await websocket.send_json(event.to_dict())
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orchestrator.timing import TurnResult

log = logging.getLogger("orchestrator")


class EventKind(str, enum.Enum):
    SPEECH_STARTED = "speech_started"  # the user started speaking (may barge in)
    INTERIM = "interim"  # a partial transcript
    CANDIDATE = "candidate"  # a probable end of turn: a speculative reply may start (held)
    RETRACTED = "retracted"  # the user went on: the candidate is void
    FINAL = "final"  # the user's turn, final text (empty: noise, not a turn)
    REPLY_DELTA = "reply_delta"  # reply text the user may see (a held reply: all of it once confirmed)
    BARGE_IN = "barge_in"  # the user interrupted the agent; `text` is what they heard of the reply
    DISCARDED = "discarded"  # a speculative reply was thrown away; `text` is its transcript
    TURN = "turn"  # a turn is over; `result` holds its figures and audio


@dataclass(frozen=True)
class ConversationEvent:
    """One UI event. `text` carries the transcript or reply text where the kind has one."""

    kind: EventKind
    text: str = ""
    utterance_index: int = 0
    result: TurnResult | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (a turn's result without its audio)."""
        record: dict[str, Any] = {"kind": self.kind.value, "text": self.text, "utterance_index": self.utterance_index}
        if self.result is not None:
            record["result"] = self.result.as_dict()
        return record


Listener = Callable[[ConversationEvent], None]


def notify(listener: Listener | None, event: ConversationEvent) -> None:
    """Deliver `event`; a failing listener is logged, never breaks the conversation."""
    if listener is None:
        return
    try:
        listener(event)
    except Exception:
        log.exception("listener failed on %s", event.kind.value)


class EventQueue:
    """A listener that queues events for an async consumer (`async for event in queue`)."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[ConversationEvent | None] = asyncio.Queue()

    def __call__(self, event: ConversationEvent) -> None:
        self._queue.put_nowait(event)

    def close(self) -> None:
        """End the iteration once the events queued so far are consumed."""
        self._queue.put_nowait(None)

    async def __aiter__(self) -> AsyncIterator[ConversationEvent]:
        while (event := await self._queue.get()) is not None:
            yield event
