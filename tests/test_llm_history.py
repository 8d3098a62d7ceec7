"""The client's history (GenerateRequest.history) on the LLM service with FakeLanguageEngine:
it replaces the history a replica kept, so any replica can continue a conversation; whether the
replica already held it is reported (GenerationSummary.kv_cache_hit, GetStats counters)."""

from __future__ import annotations

import grpc
import pytest

from llm_service.engine import Message
from llm_service.sessions import holds_prefix
from tests.fake_llm_engine import FakeLlm
from tests.test_llm_fast import generate
from voice.llm.v1 import llm_pb2


def chat(*pairs: tuple[str, str]) -> list[llm_pb2.ChatMessage]:
    return [llm_pb2.ChatMessage(role=role, content=content) for role, content in pairs]


def test_a_replica_that_never_saw_the_conversation_continues_it_from_the_client_history(fake_llm: FakeLlm) -> None:
    history = chat(("user", "My name is Anna."), ("assistant", "Nice to meet you, Anna."))
    _, final = generate(
        fake_llm.stub, session_id="conv-1", history=history, messages=chat(("user", "What is my name?"))
    )
    assert not final.kv_cache_hit  # this replica had to read the history
    kept = fake_llm.stub.GetSession(llm_pb2.GetSessionRequest(session_id="conv-1"), timeout=10).messages
    assert [(m.role, m.content) for m in kept[1:4]] == [(m.role, m.content) for m in history] + [
        ("user", "What is my name?")
    ]
    # The next turn, with the client's (now longer) history: the replica holds it.
    history += chat(("user", "What is my name?"), ("assistant", final.text))
    _, second = generate(fake_llm.stub, session_id="conv-1", history=history, messages=chat(("user", "Thanks!")))
    assert second.kv_cache_hit
    stats = fake_llm.stub.GetStats(llm_pb2.GetStatsRequest(), timeout=10)
    assert (stats.generations_total, stats.kv_cache_hits_total, stats.kv_cache_misses_total) == (2, 1, 1)


def test_the_client_history_wins_over_what_the_replica_kept(fake_llm: FakeLlm) -> None:
    generate(fake_llm.stub, session_id="conv-2", messages=chat(("user", "I like tea.")))
    heard = chat(("user", "I like tea."), ("assistant", ""))  # the user heard nothing of the reply
    generate(fake_llm.stub, session_id="conv-2", history=heard, messages=chat(("user", "And coffee.")))
    kept = fake_llm.stub.GetSession(llm_pb2.GetSessionRequest(session_id="conv-2"), timeout=10).messages
    assert [(m.role, m.content) for m in kept[1:4]] == [
        ("user", "I like tea."),
        ("assistant", ""),
        ("user", "And coffee."),
    ]


@pytest.mark.parametrize(
    ("request_fields", "says"),
    [
        ({"history": chat(("system", "obey"))}, "history[0].role 'system' is not allowed"),
        ({"history": chat(("user", " "))}, "history[0] is an empty user message"),
        ({"session_id": "", "history": chat(("user", "hi"))}, "history needs a session_id"),
    ],
    ids=["system-role", "empty-user", "no-session"],
)
def test_bad_history_is_invalid_argument_saying_what_is_wrong(
    fake_llm: FakeLlm, request_fields: dict[str, object], says: str
) -> None:
    fields: dict[str, object] = {"session_id": "conv-3", "messages": chat(("user", "hello")), **request_fields}
    with pytest.raises(grpc.RpcError) as refused:
        generate(fake_llm.stub, **fields)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert says in (refused.value.details() or "")


def test_holds_prefix_tolerates_a_last_reply_cut_by_a_barge_in() -> None:
    u, a = Message("user", "hi"), Message("assistant", "hello there, how")
    cut = Message("assistant", "hello")
    assert holds_prefix([u, a], [u, cut, Message("user", "again")])
    assert not holds_prefix([], [u, a])
    assert not holds_prefix([Message("user", "other")], [u, a])
