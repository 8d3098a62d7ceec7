"""Keeping the LLM's conversation history true to what the user heard.

The orchestrator keeps the authoritative history (`ClientHistory`: what the user said and what
they heard) and sends it with every Generate (GenerateRequest.history), so any LLM replica can
continue the conversation when the one that served it is gone. The replica's own copy is kept
in step too: a barged-in reply is replaced by the part the user heard (RecordHeardReply); a
discarded speculative reply is removed with its user message (DiscardTurn, matched by turn id).
"""

from __future__ import annotations

import asyncio
import logging

import grpc

from orchestrator.timing import Mark
from orchestrator.turn import Turn
from voice.llm.v1 import llm_pb2, llm_pb2_grpc

log = logging.getLogger("orchestrator")


class ClientHistory:
    """The turns the user took part in, in order; a discarded (speculative) turn leaves it."""

    def __init__(self) -> None:
        self._turns: list[Turn] = []

    def add(self, turn: Turn) -> None:
        self._turns.append(turn)

    def remove(self, turn: Turn) -> None:
        self._turns = [t for t in self._turns if t is not turn]

    def clear(self) -> None:
        self._turns = []

    def before(self, turn: Turn) -> list[llm_pb2.ChatMessage]:
        """History for `turn`'s Generate: each earlier turn's words and the reply as heard."""
        messages: list[llm_pb2.ChatMessage] = []
        for earlier in self._turns:
            if earlier is turn:
                break
            if not earlier.transcript:
                continue
            reply = (earlier.heard or "") if earlier.barge_in else earlier.spoken.text
            messages.append(llm_pb2.ChatMessage(role="user", content=earlier.transcript))
            messages.append(llm_pb2.ChatMessage(role="assistant", content=reply))
        return messages


async def record_heard(llm: llm_pb2_grpc.LanguageModelStub, session_id: str, turn: Turn) -> None:
    """Tell the LLM what of its reply the user heard; the rest never happened.

    The LLM stores a finished reply, or an empty "interrupted" marker for a generation cancelled
    after it started; RecordHeardReply replaces either. A call cancelled before any token came
    may have been queued (nothing stored): then the last assistant message is the previous
    turn's and must not be touched; an empty marker, if any, already says "heard nothing".
    """
    if Mark.FIRST_TOKEN not in turn.timeline:
        return
    try:
        await llm.RecordHeardReply(
            llm_pb2.RecordHeardReplyRequest(session_id=session_id, heard_text=turn.heard or ""),
            metadata=turn.trace.metadata(),
            timeout=10,
        )
    except grpc.RpcError as error:
        log.warning("RecordHeardReply failed: %s", error)
        turn.trace.event("record_heard_failed", {"error": str(error.code())})


async def discard_turn(llm: llm_pb2_grpc.LanguageModelStub, session_id: str, turn: Turn) -> None:
    """Remove a thrown-away turn (user message + reply) from the LLM history.

    The LLM stores a cancelled generation as user message + empty reply, a finished one whole;
    DiscardTurn waits for the cancelled call to settle first.
    """
    try:
        response = await llm.DiscardTurn(
            llm_pb2.DiscardTurnRequest(session_id=session_id, turn_id=turn.turn_id),
            metadata=turn.trace.metadata(),
            timeout=10,
        )
        turn.trace.event("llm_turn_discarded", {"removed_messages": response.removed_messages})
    except grpc.RpcError as error:  # NOT_FOUND: the session's first Generate never reached the server
        if error.code() != grpc.StatusCode.NOT_FOUND:
            log.warning("DiscardTurn failed: %s", error)
        turn.trace.event("discard_turn_failed", {"error": str(error.code())})


class BackgroundDiscards:
    """DiscardTurn calls running beside the conversation loop.

    DiscardTurn waits on the server for the cancelled Generate to settle; the next candidate's
    reply and end-of-turn hint must not wait behind it. (The next Generate sends the client's
    history, which no longer holds the discarded turn, either way.) The turn's speculative span
    ends once the call is done, so it carries the call's outcome."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, llm: llm_pb2_grpc.LanguageModelStub, session_id: str, turn: Turn) -> None:
        task = asyncio.create_task(self._discard(llm, session_id, turn))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _discard(llm: llm_pb2_grpc.LanguageModelStub, session_id: str, turn: Turn) -> None:
        if "llm" in turn.calls:
            await discard_turn(llm, session_id, turn)
        turn.trace.discarded(turn.cancelled_rpcs)

    async def settle(self) -> None:
        """Wait for the calls still on their way (end of a run, close)."""
        await asyncio.gather(*self._tasks, return_exceptions=True)
