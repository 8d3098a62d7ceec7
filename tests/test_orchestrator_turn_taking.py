"""The turn-taking rules on their own (no services): which steps each STT event leads to."""

from __future__ import annotations

from opentelemetry import trace

from orchestrator.tracing import TurnTrace, turn_tracer
from orchestrator.turn import Turn
from orchestrator.turn_taking import Action, Gate, Step, TurnTaking
from voice.stt.v1 import stt_pb2

Ev = stt_pb2.StreamingRecognizeResponse


def turn(transcript: str, *, speculative: bool = False, prev: Turn | None = None) -> Turn:
    trace_ = TurnTrace(turn_tracer(), trace.INVALID_SPAN, speculative=speculative, transcript="", utterance_index=0)
    return Turn(1, transcript, 0, speculative=speculative, prev=prev, offset_ms=0, trace=trace_)


def actions(steps: list[Step]) -> list[Action]:
    return [s.action for s in steps]


def test_a_candidate_is_held_and_the_matching_final_releases_it() -> None:
    rules = TurnTaking(barge_in=True, preemptive=True)
    assert actions(rules.decide(Ev.CANDIDATE_FINAL, " what time is it ")) == [Action.HOLD]
    held = turn("what time is it", speculative=True)
    rules.started(held)
    assert rules.gate is Gate.HOLDING
    assert rules.decide(Ev.CANDIDATE_FINAL, "what time is it") == [], "one speculative reply at a time"
    steps = rules.decide(Ev.FINAL, "What time  is it")
    assert steps == [Step(Action.RELEASE, held.turn_id), Step(Action.NEXT_TURN)]
    assert rules.take_held(held.turn_id) is held and rules.gate is Gate.OPEN


def test_a_retraction_or_a_different_final_discards_the_held_reply() -> None:
    rules = TurnTaking(barge_in=True, preemptive=True)
    held = turn("what is the", speculative=True)
    rules.started(held)
    assert rules.decide(Ev.CANDIDATE_RETRACTED, "") == [Step(Action.DISCARD, held.turn_id)]
    assert rules.decide(Ev.FINAL, "what is the capital of France") == [
        Step(Action.DISCARD, held.turn_id),
        Step(Action.REPLY),
        Step(Action.NEXT_TURN),
    ]
    assert rules.take_held("another-id") is None and rules.held is held, "matched by turn id"
    rules.dropped(held)
    assert rules.gate is Gate.OPEN and rules.current is None


def test_an_empty_final_is_noise_not_a_turn() -> None:
    rules = TurnTaking(barge_in=True, preemptive=True)
    assert rules.decide(Ev.FINAL, "  ") == []
    held = turn("um", speculative=True)
    rules.started(held)
    assert rules.decide(Ev.FINAL, "") == [Step(Action.DISCARD, held.turn_id)]


def test_speech_interrupts_only_a_confirmed_reply_that_is_not_over() -> None:
    rules = TurnTaking(barge_in=True, preemptive=True)
    assert rules.decide(Ev.SPEECH_STARTED, "") == []
    reply = turn("tell me a story")
    rules.started(reply)
    assert rules.decide(Ev.SPEECH_STARTED, "") == [], "not confirmed yet: held audio is never playing"
    reply.confirmed.set()
    assert rules.decide(Ev.SPEECH_STARTED, "") == [Step(Action.INTERRUPT, reply.turn_id)]
    reply.done.set()
    assert rules.decide(Ev.SPEECH_STARTED, "") == []
    off = TurnTaking(barge_in=False, preemptive=True)
    off.started(turn("tell me a story"))
    assert off.current is not None
    off.current.confirmed.set()
    assert off.decide(Ev.SPEECH_STARTED, "") == []


def test_no_speculation_while_the_previous_reply_is_still_generating_or_when_off() -> None:
    rules = TurnTaking(barge_in=True, preemptive=True)
    previous = turn("first question")
    rules.started(previous)
    assert rules.decide(Ev.CANDIDATE_FINAL, "second") == [], "the LLM history must hold the previous reply first"
    previous.llm_done.set()
    assert actions(rules.decide(Ev.CANDIDATE_FINAL, "second")) == [Action.HOLD]
    assert TurnTaking(barge_in=True, preemptive=False).decide(Ev.CANDIDATE_FINAL, "second") == []
    assert rules.decide(Ev.CANDIDATE_FINAL, "   ") == []
