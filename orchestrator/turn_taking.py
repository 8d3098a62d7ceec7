"""Turn-taking rules: who speaks when, as a small state machine (no I/O).

The machine owns two references: the `current` turn (the latest reply, possibly still playing)
and the `held` one, a speculative reply started on a CANDIDATE_FINAL whose audio is held until a
FINAL with the same text releases it (like pipecat's speculative response gate: OPEN with
nothing held, HOLDING one reply, matched by its turn id). `decide()` maps one STT event to the
steps the conversation carries out, in order; the conversation reports back with `started()` and
`dropped()`. A new rule goes here, with a fast test in tests/test_orchestrator_turn_taking.py.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from orchestrator.turn import Turn
from voice.stt.v1 import stt_pb2

Ev = stt_pb2.StreamingRecognizeResponse


class Gate(str, enum.Enum):
    OPEN = "open"  # no speculative reply
    HOLDING = "holding"  # one speculative reply, its audio held


class Action(str, enum.Enum):
    INTERRUPT = "interrupt"  # barge-in: stop the current reply (turn_id), record what was heard
    HOLD = "hold"  # start a speculative reply on the candidate text, audio held
    RELEASE = "release"  # the FINAL confirms the held reply (turn_id): it may play
    DISCARD = "discard"  # throw the held reply (turn_id) away: cancel its calls, drop it from the history
    REPLY = "reply"  # start a reply to the FINAL's text
    NEXT_TURN = "next_turn"  # the turn is heard: listen for the next one (a new STT stream)


@dataclass(frozen=True)
class Step:
    action: Action
    turn_id: str = ""


def same_text(a: str, b: str) -> bool:
    return " ".join(a.lower().split()) == " ".join(b.lower().split())


class TurnTaking:
    """The rules. `barge_in`: the user's speech stops a playing reply; `preemptive`: reply on candidates."""

    def __init__(self, *, barge_in: bool, preemptive: bool) -> None:
        self.barge_in = barge_in
        self.preemptive = preemptive
        self.current: Turn | None = None
        self.held: Turn | None = None

    @property
    def gate(self) -> Gate:
        return Gate.OPEN if self.held is None else Gate.HOLDING

    def decide(self, kind: int, text: str) -> list[Step]:
        """The steps for one STT event (`kind` a StreamingRecognizeResponse.EventType)."""
        text = text.strip()
        current, held = self.current, self.held
        if kind == Ev.SPEECH_STARTED:
            speaking = current is not None and current.confirmed.is_set() and not current.done.is_set()
            if self.barge_in and speaking and current is not None:
                return [Step(Action.INTERRUPT, current.turn_id)]
        elif kind == Ev.CANDIDATE_FINAL:
            # One speculative reply at a time, and only once the LLM history holds the previous reply.
            idle = current is None or current.llm_done.is_set()
            if self.preemptive and held is None and text and idle:
                return [Step(Action.HOLD)]
        elif kind == Ev.CANDIDATE_RETRACTED:
            if held is not None:
                return [Step(Action.DISCARD, held.turn_id)]
        elif kind == Ev.FINAL:
            if not text:  # an empty FINAL is noise, not a turn
                return [Step(Action.DISCARD, held.turn_id)] if held is not None else []
            if held is not None and same_text(held.transcript, text):
                return [Step(Action.RELEASE, held.turn_id), Step(Action.NEXT_TURN)]
            steps = [Step(Action.DISCARD, held.turn_id)] if held is not None else []
            return [*steps, Step(Action.REPLY), Step(Action.NEXT_TURN)]
        return []

    def take_held(self, turn_id: str) -> Turn | None:
        """The held reply with this id, no longer held (released or to be discarded)."""
        held = self.held
        if held is None or held.turn_id != turn_id:
            return None
        self.held = None
        return held

    def started(self, turn: Turn) -> None:
        """A reply started: it is the current turn (and the held one when speculative)."""
        self.current = turn
        if turn.speculative:
            self.held = turn

    def dropped(self, turn: Turn) -> None:
        """A reply was discarded: the previous one is current again if it still runs."""
        if self.held is turn:
            self.held = None
        if self.current is turn:
            prev = turn.prev
            self.current = prev if prev is not None and not prev.done.is_set() else None

    def reset(self) -> None:
        self.current = self.held = None
