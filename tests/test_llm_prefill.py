"""Fast tests of the Prefill RPC with FakeLanguageEngine: the user's words are read into the
session's cache while they speak, revised words keep the common prefix, nothing is stored in the
history, a newer Prefill supersedes a queued one, and bad input gets INVALID_ARGUMENT."""

from __future__ import annotations

import grpc
import pytest

from llm_service.engine import Sampling
from llm_service.servicer import ServiceConfig
from llm_service.validation import Limits
from tests.fake_llm_engine import FakeLlm
from voice.llm.v1 import llm_pb2

WAIT_S = 10.0


@pytest.fixture()
def fake_llm_config() -> ServiceConfig:
    """Two requests may wait for the model (the `fake_llm` fixture's server, tests/conftest.py)."""
    return ServiceConfig("Be brief.", Limits(default_max_tokens=20, max_tokens_limit=40), Sampling(), max_queue=2)


def prefill(fake_llm: FakeLlm, text: str, sid: str = "p") -> llm_pb2.PrefillResponse:
    return fake_llm.stub.Prefill(llm_pb2.PrefillRequest(session_id=sid, text=text), timeout=WAIT_S)


def generate(fake_llm: FakeLlm, text: str, sid: str = "p") -> llm_pb2.GenerationSummary:
    request = llm_pb2.GenerateRequest(session_id=sid, messages=[llm_pb2.ChatMessage(role="user", content=text)])
    finals = [r.final for r in fake_llm.stub.Generate(request, timeout=WAIT_S) if r.HasField("final")]
    return finals[0]


def test_prefill_feeds_the_turn_and_stores_nothing(fake_llm: FakeLlm) -> None:
    first = prefill(fake_llm, "what is the")
    assert first.prompt_tokens > 0 and not first.superseded
    grown = prefill(fake_llm, "what is the capital of France?")
    assert grown.cached_prompt_tokens == first.prompt_tokens, "words already read are not read again"
    assert grown.end_of_turn_probability > 0.5 > first.end_of_turn_probability
    history = fake_llm.stub.GetSession(llm_pb2.GetSessionRequest(session_id="p"), timeout=WAIT_S).messages
    assert [m.role for m in history] == ["system"], "Prefill stores no message"
    summary = generate(fake_llm, "what is the capital of France?")
    assert summary.cached_prompt_tokens >= grown.prompt_tokens
    history = fake_llm.stub.GetSession(llm_pb2.GetSessionRequest(session_id="p"), timeout=WAIT_S).messages
    assert [m.role for m in history] == ["system", "user", "assistant"]


def test_revised_words_keep_only_the_common_prefix(fake_llm: FakeLlm) -> None:
    first = prefill(fake_llm, "book a table for two at seven")
    revised = prefill(fake_llm, "book a table for three at seven")
    assert revised.cached_prompt_tokens < first.prompt_tokens
    assert revised.cached_prompt_tokens == first.prompt_tokens - 3  # "two at seven" read again


def test_prefill_continues_a_session_after_its_replies(fake_llm: FakeLlm) -> None:
    generate(fake_llm, "hello")
    response = prefill(fake_llm, "and now")
    assert fake_llm.engine.prefills[-1][-1].content == "and now"
    assert [m.role for m in fake_llm.engine.prefills[-1]] == ["system", "user", "assistant", "user"]
    assert response.cached_prompt_tokens > 0


def start_prefill(fake_llm: FakeLlm, sid: str, text: str) -> grpc.Future:
    return fake_llm.stub.Prefill.future(llm_pb2.PrefillRequest(session_id=sid, text=text), timeout=WAIT_S)


def on_the_model(fake_llm: FakeLlm, queued: int) -> None:
    """Wait (on the worker's condition, no polling) until one call runs and `queued` wait behind it."""
    worker = fake_llm.worker
    assert worker.wait_until(lambda: (worker.active, worker.queued) == (1, queued), WAIT_S)


def test_a_newer_prefill_supersedes_a_queued_one(fake_llm: FakeLlm) -> None:
    fake_llm.engine.gate.clear()  # the first Prefill holds the model
    running = start_prefill(fake_llm, "q", "one")
    on_the_model(fake_llm, queued=0)
    older = start_prefill(fake_llm, "q", "one two")
    on_the_model(fake_llm, queued=1)
    newer = start_prefill(fake_llm, "q", "one two three")
    on_the_model(fake_llm, queued=2)
    fake_llm.engine.gate.set()
    assert not running.result().superseded
    assert older.result().superseded and older.result().prompt_tokens == 0
    assert not newer.result().superseded
    assert [m[-1].content for m in fake_llm.engine.prefills] == ["one", "one two three"]


def test_queue_full_is_resource_exhausted(fake_llm: FakeLlm) -> None:
    # One at a time: sent together, two could wait before the worker took the first, and the
    # fourth call could then pass the limit in place of the third (failed once under load).
    fake_llm.engine.gate.clear()
    calls = [start_prefill(fake_llm, "s0", "hi")]
    on_the_model(fake_llm, queued=0)
    calls += [start_prefill(fake_llm, f"s{i}", "hi") for i in (1, 2)]
    on_the_model(fake_llm, queued=2)
    stats = fake_llm.stub.GetStats(llm_pb2.GetStatsRequest(), timeout=WAIT_S)
    assert (stats.active_generations, stats.queued_generations, stats.max_queued) == (1, 2, 2)
    with pytest.raises(grpc.RpcError) as info:
        prefill(fake_llm, "one too many", sid="s9")
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "--max-queue" in (info.value.details() or "")
    fake_llm.engine.gate.set()
    assert all(not c.result().superseded for c in calls)
    assert len(fake_llm.engine.prefills) == 3, "the refused call never reached the model"


@pytest.mark.parametrize(
    ("request_", "text"),
    [
        (llm_pb2.PrefillRequest(text="hi"), "session_id is required"),
        (llm_pb2.PrefillRequest(session_id="bad id!", text="hi"), "malformed"),
        (llm_pb2.PrefillRequest(session_id="s", text="  "), "text is empty"),
        (llm_pb2.PrefillRequest(session_id="s", text="x" * 4001), "at most 4000"),
        (llm_pb2.PrefillRequest(session_id="s", text="w " * 300), "at most"),
    ],
)
def test_bad_input_is_invalid_argument(fake_llm: FakeLlm, request_: llm_pb2.PrefillRequest, text: str) -> None:
    with pytest.raises(grpc.RpcError) as info:
        fake_llm.stub.Prefill(request_, timeout=WAIT_S)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert text in (info.value.details() or "")


def test_generate_scores_the_end_of_turn_first(fake_llm: FakeLlm) -> None:
    prefill(fake_llm, "what time is")
    request = llm_pb2.GenerateRequest(
        session_id="p",
        messages=[llm_pb2.ChatMessage(role="user", content="what time is it?")],
        score_end_of_turn=True,
    )
    replies = list(fake_llm.stub.Generate(request, timeout=WAIT_S))
    first, rest = replies[0], replies[1:]
    assert first.HasField("end_of_turn_probability") and first.end_of_turn_probability > 0.5 and not first.text
    assert not any(r.HasField("end_of_turn_probability") for r in rest)
    assert "".join(r.text for r in rest) == rest[-1].final.text == "You said: what time is it?"
    assert rest[-1].final.cached_prompt_tokens >= fake_llm.engine.count_tokens(fake_llm.engine.prefills[-1]) - 2
    plain = llm_pb2.GenerateRequest(session_id="p2", messages=[llm_pb2.ChatMessage(role="user", content="hi")])
    assert not any(r.HasField("end_of_turn_probability") for r in fake_llm.stub.Generate(plain, timeout=WAIT_S))


def test_score_end_of_turn_needs_a_user_message_last(fake_llm: FakeLlm) -> None:
    request = llm_pb2.GenerateRequest(
        messages=[
            llm_pb2.ChatMessage(role="user", content="hi"),
            llm_pb2.ChatMessage(role="assistant", content="hello"),
        ],
        score_end_of_turn=True,
    )
    with pytest.raises(grpc.RpcError) as info:
        list(fake_llm.stub.Generate(request, timeout=WAIT_S))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "score_end_of_turn" in (info.value.details() or "")


def test_waiting_prefills_never_get_a_reply_refused(fake_llm: FakeLlm) -> None:
    """Several conversations at once: their Prefills (optional, the words read early) fill their own
    cap, and a reply (Generate) still gets its place in the queue and is answered; only the next
    Prefill is refused, saying the words are read with the reply instead."""
    fake_llm.engine.gate.clear()  # the first Prefill holds the model
    prefills = [start_prefill(fake_llm, "c0", "hi")]
    on_the_model(fake_llm, queued=0)
    prefills += [start_prefill(fake_llm, f"c{i}", "hi") for i in (1, 2)]
    on_the_model(fake_llm, queued=2)  # Prefills: 1 running + --max-queue 2 waiting, their cap
    with pytest.raises(grpc.RpcError) as info:
        prefill(fake_llm, "one too many", sid="c9")
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "read with the reply" in (info.value.details() or "")
    request = llm_pb2.GenerateRequest(session_id="r", messages=[llm_pb2.ChatMessage(role="user", content="Hi.")])
    reply = fake_llm.stub.Generate(request, timeout=WAIT_S)  # a stream: sent now, read below
    on_the_model(fake_llm, queued=3)  # the reply waits behind the Prefills instead of being refused
    fake_llm.engine.gate.set()
    assert [r.final.finish_reason for r in reply if r.HasField("final")], "the reply was answered"
    assert all(not p.result().superseded for p in prefills)
