"""Fast tests of the LLM service logic with FakeLanguageEngine (no model): sessions, history
truncation, validation, queueing, cancellation and the gRPC status codes."""

from __future__ import annotations

import threading

import grpc
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from llm_service.engine import Message
from llm_service.sessions import PromptTooLongError, SessionLimitError, SessionStore, fit_history, split_turns
from llm_service.validation import Limits, RequestError, validate_max_tokens, validate_messages, validate_session_id
from service_runtime.worker import Job, ModelWorker, QueueFullError
from tests.fake_llm_engine import FakeLanguageEngine, FakeLlm
from tests.helpers import user
from voice.llm.v1 import llm_pb2, llm_pb2_grpc

WAIT_S = 10.0


def words(messages: list[Message]) -> int:
    return FakeLanguageEngine().count_tokens(messages)


# ---- pure logic ------------------------------------------------------------------------------
def test_split_turns_groups_user_and_replies() -> None:
    h = [Message("user", "a"), Message("assistant", "b"), Message("user", "c"), Message("assistant", "d")]
    assert split_turns(h) == [h[:2], h[2:]]


def test_fit_history_keeps_everything_when_it_fits() -> None:
    system = [Message("system", "be brief")]
    history = [Message("user", "hi"), Message("assistant", "hello")]
    kept, dropped, tokens = fit_history(system, history, [Message("user", "x")], words, n_ctx=100, max_tokens=10)
    assert kept == history and dropped == 0 and tokens == words([*system, *history, Message("user", "x")])


def test_fit_history_drops_oldest_turns_keeps_system_and_new() -> None:
    system = [Message("system", "be brief")]
    history: list[Message] = []
    for i in range(10):
        history += [Message("user", f"question {i} " + "w " * 10), Message("assistant", f"answer {i} " + "w " * 10)]
    new = [Message("user", "latest")]
    kept, dropped, tokens = fit_history(system, history, new, words, n_ctx=200, max_tokens=20)
    assert dropped > 0 and dropped % 2 == 0  # whole turns
    assert kept == history[dropped:]
    assert kept[0].role == "user"
    assert tokens <= 180 * 0.75 + 1
    assert tokens == words([*system, *kept, *new])


def test_fit_history_refuses_a_prompt_that_cannot_fit() -> None:
    with pytest.raises(PromptTooLongError, match="at most"):
        fit_history([Message("system", "s")], [], [Message("user", "w " * 100)], words, n_ctx=64, max_tokens=16)


def test_validation_messages() -> None:
    with pytest.raises(RequestError, match="empty"):
        validate_messages([], has_history=False)
    assert validate_messages([], has_history=True) == []
    with pytest.raises(RequestError, match="allowed roles"):
        validate_messages([llm_pb2.ChatMessage(role="robot", content="x")], False)
    with pytest.raises(RequestError, match="content is empty"):
        validate_messages([llm_pb2.ChatMessage(role="user", content="  ")], False)
    with pytest.raises(RequestError, match="only allowed as the first"):
        validate_messages(
            [llm_pb2.ChatMessage(role="user", content="a"), llm_pb2.ChatMessage(role="system", content="b")], False
        )


def test_validation_max_tokens_and_session_id() -> None:
    limits = Limits(default_max_tokens=200, max_tokens_limit=512)
    assert validate_max_tokens(0, limits) == 200
    assert validate_max_tokens(512, limits) == 512
    with pytest.raises(RequestError, match="1 to 512"):
        validate_max_tokens(513, limits)
    validate_session_id("user-1:turn_2.a")
    for bad in ("has space", "x" * 129, "ünïcode", "a/b"):
        with pytest.raises(RequestError, match="malformed"):
            validate_session_id(bad)


def test_session_store_ttl_and_lru() -> None:
    now = [0.0]
    evicted: list[str] = []
    store = SessionStore(ttl_s=10, max_sessions=2, on_evict=evicted.append, clock=lambda: now[0])
    store.get_or_create("a", "sys")
    now[0] = 1
    store.get_or_create("b", "sys")
    now[0] = 2
    store.get_or_create("a", "sys")  # touch a: b is now least recently used
    store.get_or_create("c", "sys")
    assert evicted == ["b"] and store.ids() == ["a", "c"]
    now[0] = 100
    assert store.get("a") is None and len(store) == 0  # expired
    assert set(evicted) == {"a", "b", "c"}


def test_session_store_full_of_busy_sessions() -> None:
    store = SessionStore(ttl_s=10, max_sessions=1)
    session, created = store.get_or_create("a", "sys")
    assert created
    session.pending.append(object())  # type: ignore[arg-type]
    with pytest.raises(SessionLimitError, match="busy"):
        store.get_or_create("b", "sys")


def test_worker_queue_cap_and_cancel_of_queued_job() -> None:
    worker = ModelWorker(max_queue=1)
    release = threading.Event()
    running = threading.Event()

    def block(_job: Job) -> None:
        running.set()
        release.wait(WAIT_S)

    first, second, third = Job(block), Job(lambda j: None), Job(lambda j: None)
    worker.submit(first)
    assert running.wait(WAIT_S)
    worker.submit(second)
    with pytest.raises(QueueFullError, match="max-queue 1"):
        worker.submit(third)
    assert (worker.active, worker.queued) == (1, 1)
    worker.cancel(second)
    assert worker.queued == 0 and second.finished.is_set()
    release.set()
    assert first.finished.wait(WAIT_S)
    worker.close()


# ---- gRPC servicer with the fake engine ---------------------------------------------------------
def generate(stub: llm_pb2_grpc.LanguageModelStub, **kwargs: object) -> tuple[list[str], llm_pb2.GenerationSummary]:
    deltas: list[str] = []
    final = None
    for reply in stub.Generate(llm_pb2.GenerateRequest(**kwargs), timeout=WAIT_S):  # type: ignore[arg-type]
        if reply.HasField("final"):
            final = reply.final
        else:
            deltas.append(reply.text)
    assert final is not None
    return deltas, final


def test_deltas_join_to_final_text(fake_llm: FakeLlm) -> None:
    deltas, final = generate(fake_llm.stub, messages=[user("hello there")])
    assert "".join(deltas) == final.text == "You said: hello there"
    assert final.finish_reason == llm_pb2.STOP
    assert final.completion_tokens == len(deltas)


def test_session_keeps_history_and_reports_cache(fake_llm: FakeLlm) -> None:
    _, first = generate(fake_llm.stub, session_id="s1", messages=[user("my name is Ada")])
    _, second = generate(fake_llm.stub, session_id="s1", messages=[user("what is my name")])
    assert second.prompt_tokens > first.prompt_tokens
    assert second.cached_prompt_tokens > 0
    seen = fake_llm.engine.calls[-1]
    assert [m.content for m in seen] == ["Be brief.", "my name is Ada", "You said: my name is Ada", "what is my name"]
    session = fake_llm.stub.GetSession(llm_pb2.GetSessionRequest(session_id="s1"))
    assert [m.role for m in session.messages] == ["system", "user", "assistant", "user", "assistant"]
    assert session.context_tokens == 200 and session.history_tokens > 0
    reset = fake_llm.stub.ResetSession(llm_pb2.ResetSessionRequest(session_id="s1"))
    assert reset.dropped_messages == 5 and "s1" in fake_llm.engine.forgotten
    with pytest.raises(grpc.RpcError) as info:
        fake_llm.stub.GetSession(llm_pb2.GetSessionRequest(session_id="s1"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_history_truncation_reports_dropped_messages(fake_llm: FakeLlm) -> None:
    dropped = []
    for i in range(12):
        _, final = generate(fake_llm.stub, session_id="long", messages=[user(f"turn {i} " + "word " * 8)])
        dropped.append(final.dropped_messages)
    assert sum(dropped) > 0 and all(d % 2 == 0 for d in dropped)
    session = fake_llm.stub.GetSession(llm_pb2.GetSessionRequest(session_id="long"))
    assert session.messages[0].role == "system" and session.messages[1].role == "user"
    assert session.history_tokens <= 200


def test_record_heard_reply(fake_llm: FakeLlm) -> None:
    generate(fake_llm.stub, session_id="h", messages=[user("tell me a long story")])
    stored = fake_llm.stub.RecordHeardReply(llm_pb2.RecordHeardReplyRequest(session_id="h", heard_text="You said:"))
    assert stored.stored_text == "You said:"
    session = fake_llm.stub.GetSession(llm_pb2.GetSessionRequest(session_id="h"))
    assert session.messages[-1] == llm_pb2.ChatMessage(role="assistant", content="You said:")
    assert fake_llm.engine.dropped_replies == ["h"]
    empty = fake_llm.stub.RecordHeardReply(llm_pb2.RecordHeardReplyRequest(session_id="h", heard_text=""))
    assert empty.stored_text == ""
    with pytest.raises(grpc.RpcError) as info:
        fake_llm.stub.RecordHeardReply(llm_pb2.RecordHeardReplyRequest(session_id="nope", heard_text="x"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_record_heard_reply_needs_an_assistant_reply(fake_llm: FakeLlm) -> None:
    generate(fake_llm.stub, session_id="q", messages=[user("hi")])
    store = fake_llm.servicer.sessions
    with store.lock:  # a session whose last message is the user's (e.g. a client-built history)
        session = store.get("q")
        assert session is not None
        session.messages.append(Message("user", "pending"))
    with pytest.raises(grpc.RpcError) as info:
        fake_llm.stub.RecordHeardReply(llm_pb2.RecordHeardReplyRequest(session_id="q", heard_text="x"))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "not an assistant reply" in (info.value.details() or "")


def test_cancel_mid_stream_frees_the_model(fake_llm: FakeLlm) -> None:
    fake_llm.engine.gate.clear()
    call = fake_llm.stub.Generate(
        llm_pb2.GenerateRequest(session_id="c", messages=[user("one two three four five")]), timeout=WAIT_S
    )
    assert fake_llm.engine.started.wait(WAIT_S)
    fake_llm.engine.gate.set()
    first = next(call)
    assert first.text
    fake_llm.engine.gate.clear()
    call.cancel()
    fake_llm.engine.gate.set()
    # The cancelled turn settles: RecordHeardReply waits for it, then replaces the empty marker.
    stored = fake_llm.stub.RecordHeardReply(llm_pb2.RecordHeardReplyRequest(session_id="c", heard_text="You"))
    assert stored.stored_text == "You"
    stats = fake_llm.stub.GetStats(llm_pb2.GetStatsRequest())
    assert stats.active_generations == 0 and stats.queued_generations == 0
    session = fake_llm.stub.GetSession(llm_pb2.GetSessionRequest(session_id="c"))
    assert [m.content for m in session.messages[1:]] == ["one two three four five", "You"]
    _, final = generate(fake_llm.stub, session_id="c", messages=[user("again")])
    assert final.finish_reason == llm_pb2.STOP


def test_queue_cap_gives_resource_exhausted(fake_llm: FakeLlm) -> None:
    fake_llm.engine.gate.clear()
    running = fake_llm.stub.Generate(llm_pb2.GenerateRequest(messages=[user("a b c")]), timeout=WAIT_S)
    assert fake_llm.engine.started.wait(WAIT_S)
    waiting = fake_llm.stub.Generate(llm_pb2.GenerateRequest(messages=[user("queued")]), timeout=WAIT_S)
    worker = fake_llm.servicer.worker
    assert worker.wait_until(lambda: worker.queued == 1, WAIT_S)
    assert fake_llm.stub.GetStats(llm_pb2.GetStatsRequest()).queued_generations == 1
    with pytest.raises(grpc.RpcError) as info:
        list(fake_llm.stub.Generate(llm_pb2.GenerateRequest(messages=[user("too many")]), timeout=WAIT_S))
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "max-queue" in (info.value.details() or "")
    waiting.cancel()
    fake_llm.engine.gate.set()
    assert "".join(r.text for r in running if not r.HasField("final")) == "You said: a b c"
    stats = fake_llm.stub.GetStats(llm_pb2.GetStatsRequest())
    assert (stats.active_generations, stats.queued_generations, stats.max_queued) == (0, 0, 1)


BAD_REQUESTS = [
    (llm_pb2.GenerateRequest(), grpc.StatusCode.INVALID_ARGUMENT, "messages is empty"),
    (llm_pb2.GenerateRequest(session_id="new", messages=[]), grpc.StatusCode.INVALID_ARGUMENT, "messages is empty"),
    (llm_pb2.GenerateRequest(messages=[llm_pb2.ChatMessage(role="bot", content="x")]), grpc.StatusCode.INVALID_ARGUMENT, "allowed roles"),
    (llm_pb2.GenerateRequest(messages=[user("")]), grpc.StatusCode.INVALID_ARGUMENT, "content is empty"),
    (llm_pb2.GenerateRequest(messages=[user("x")], sampling=llm_pb2.SamplingOptions(temperature=2.5)), grpc.StatusCode.INVALID_ARGUMENT, "temperature"),
    (llm_pb2.GenerateRequest(messages=[user("x")], sampling=llm_pb2.SamplingOptions(top_p=0)), grpc.StatusCode.INVALID_ARGUMENT, "top_p"),
    (llm_pb2.GenerateRequest(messages=[user("x")], sampling=llm_pb2.SamplingOptions(top_k=1001)), grpc.StatusCode.INVALID_ARGUMENT, "top_k"),
    (llm_pb2.GenerateRequest(messages=[user("x")], sampling=llm_pb2.SamplingOptions(repeat_penalty=0.5)), grpc.StatusCode.INVALID_ARGUMENT, "repeat_penalty"),
    (llm_pb2.GenerateRequest(messages=[user("x")], max_tokens=41), grpc.StatusCode.INVALID_ARGUMENT, "1 to 40"),
    (llm_pb2.GenerateRequest(messages=[user("w " * 300)]), grpc.StatusCode.INVALID_ARGUMENT, "at most"),
    (llm_pb2.GenerateRequest(session_id="bad id!", messages=[user("x")]), grpc.StatusCode.INVALID_ARGUMENT, "malformed"),
]  # fmt: skip


@pytest.mark.parametrize(("request_", "code", "text"), BAD_REQUESTS)
def test_bad_input_status_codes(
    fake_llm: FakeLlm, request_: llm_pb2.GenerateRequest, code: grpc.StatusCode, text: str
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        list(fake_llm.stub.Generate(request_, timeout=WAIT_S))
    assert info.value.code() == code
    assert text in (info.value.details() or "")


def test_session_rpcs_validate_ids(fake_llm: FakeLlm) -> None:
    for rpc, req in (
        (fake_llm.stub.ResetSession, llm_pb2.ResetSessionRequest(session_id="unknown")),
        (fake_llm.stub.GetSession, llm_pb2.GetSessionRequest(session_id="unknown")),
    ):
        with pytest.raises(grpc.RpcError) as info:
            rpc(req)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as info:
        fake_llm.stub.GetSession(llm_pb2.GetSessionRequest(session_id="bad id"))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_token_decoder_holds_split_utf8_characters() -> None:
    from llm_service.llama_engine import TokenTextDecoder

    text = "Café 😀 日本"
    data = text.encode("utf-8")
    decoder = TokenTextDecoder()
    deltas = [decoder.feed(data[i : i + 1]) for i in range(len(data))]  # one byte per "token"
    assert "".join(deltas) + decoder.flush() == text
    assert all("\ufffd" not in d for d in deltas)


def test_generate_span_has_turn_attributes(fake_llm: FakeLlm, span_exporter: InMemorySpanExporter) -> None:
    exporter = span_exporter
    generate(fake_llm.stub, session_id="traced", messages=[user("hello")])
    spans = [s for s in exporter.get_finished_spans() if s.name == "llm.generate"]
    assert spans, "no llm.generate span"
    attrs = spans[-1].attributes or {}
    for key in ("queue_wait_ms", "prompt_tokens", "cached_prompt_tokens", "completion_tokens", "ttft_ms",
                "tokens_per_second", "dropped_messages", "finish_reason"):  # fmt: skip
        assert key in attrs, key
    assert attrs["session_id"] == "traced" and attrs["finish_reason"] == "stop"
    assert "first_token" in [e.name for e in spans[-1].events]


def test_token_decoder_drops_a_character_cut_at_the_end() -> None:
    from llm_service.llama_engine import TokenTextDecoder

    decoder = TokenTextDecoder()
    data = "ok 😀".encode()
    assert decoder.feed(data[:-2]) == "ok "  # max_tokens cut the emoji after 2 of its 4 bytes
    assert decoder.flush() == ""


# ---- DiscardTurn -----------------------------------------------------------------------------
def history_of(fake_llm: FakeLlm, session_id: str) -> list[tuple[str, str]]:
    session = fake_llm.stub.GetSession(llm_pb2.GetSessionRequest(session_id=session_id))
    return [(m.role, m.content) for m in session.messages[1:]]


def discard(fake_llm: FakeLlm, session_id: str, turn_id: str) -> int:
    request = llm_pb2.DiscardTurnRequest(session_id=session_id, turn_id=turn_id)
    return fake_llm.stub.DiscardTurn(request, timeout=WAIT_S).removed_messages


def test_discard_turn_removes_a_finished_turn_and_trims_the_cache(fake_llm: FakeLlm) -> None:
    generate(fake_llm.stub, session_id="d", messages=[user("my name is Ada")], turn_id="1-a")
    generate(fake_llm.stub, session_id="d", messages=[user("what is the")], turn_id="2-b")
    assert discard(fake_llm, "d", "2-b") == 2
    assert history_of(fake_llm, "d") == [("user", "my name is Ada"), ("assistant", "You said: my name is Ada")]
    key, kept = fake_llm.engine.trimmed[-1]
    assert key == "d" and 0 < kept < fake_llm.engine.count_tokens(fake_llm.engine.calls[-1])
    assert discard(fake_llm, "d", "2-b") == 0, "idempotent"
    assert discard(fake_llm, "d", "never-sent") == 0
    with pytest.raises(grpc.RpcError) as info:  # a late Generate of the discarded turn
        generate(fake_llm.stub, session_id="d", messages=[user("what is the")], turn_id="2-b")
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "discarded" in (info.value.details() or "")
    generate(fake_llm.stub, session_id="d", messages=[user("what is the time")], turn_id="3-c")
    assert [m.content for m in fake_llm.engine.calls[-1][1:]] == [
        "my name is Ada",
        "You said: my name is Ada",
        "what is the time",
    ], "the next turn does not see the discarded one"


def test_discard_turn_of_a_cancelled_generation_leaves_no_marker(fake_llm: FakeLlm) -> None:
    generate(fake_llm.stub, session_id="x", messages=[user("hello")])
    fake_llm.engine.gate.clear()
    call = fake_llm.stub.Generate(
        llm_pb2.GenerateRequest(session_id="x", turn_id="spec", messages=[user("can you tell me")]), timeout=WAIT_S
    )
    assert fake_llm.engine.started.wait(WAIT_S)
    fake_llm.engine.gate.set()
    assert next(call).text
    fake_llm.engine.gate.clear()
    call.cancel()
    fake_llm.engine.gate.set()
    # Sent right after the cancel: waits for the generation to settle, then removes user + "" marker.
    assert discard(fake_llm, "x", "spec") == 2
    assert history_of(fake_llm, "x") == [("user", "hello"), ("assistant", "You said: hello")]
    stats = fake_llm.stub.GetStats(llm_pb2.GetStatsRequest())
    assert stats.active_generations == 0 and stats.queued_generations == 0


def test_discard_turn_waits_for_a_running_generation_of_the_turn(fake_llm: FakeLlm) -> None:
    fake_llm.engine.gate.clear()
    fake_llm.engine.started.clear()
    call = fake_llm.stub.Generate(
        llm_pb2.GenerateRequest(session_id="w", turn_id="t1", messages=[user("one two")]), timeout=WAIT_S
    )
    assert fake_llm.engine.started.wait(WAIT_S)
    pending = fake_llm.stub.DiscardTurn.future(llm_pb2.DiscardTurnRequest(session_id="w", turn_id="t1"), timeout=WAIT_S)
    assert fake_llm.servicer.worker.active == 1 and not pending.done()
    fake_llm.engine.gate.set()
    assert "".join(r.text for r in call) == "You said: one two"  # the speculative reply completed...
    assert pending.result().removed_messages == 2  # ...and is removed whole
    assert history_of(fake_llm, "w") == []


def test_discard_turn_errors(fake_llm: FakeLlm) -> None:
    generate(fake_llm.stub, session_id="e", messages=[user("first")], turn_id="a")
    generate(fake_llm.stub, session_id="e", messages=[user("second")], turn_id="b")
    cases = [
        (llm_pb2.DiscardTurnRequest(session_id="unknown", turn_id="a"), grpc.StatusCode.NOT_FOUND, "unknown"),
        (llm_pb2.DiscardTurnRequest(session_id="e", turn_id=""), grpc.StatusCode.INVALID_ARGUMENT, "required"),
        (llm_pb2.DiscardTurnRequest(session_id="e", turn_id="bad id"), grpc.StatusCode.INVALID_ARGUMENT, "malformed"),
        (llm_pb2.DiscardTurnRequest(session_id="", turn_id="a"), grpc.StatusCode.INVALID_ARGUMENT, "session_id"),
        (llm_pb2.DiscardTurnRequest(session_id="e", turn_id="a"), grpc.StatusCode.FAILED_PRECONDITION, "latest"),
    ]
    for request, code, text in cases:
        with pytest.raises(grpc.RpcError) as info:
            fake_llm.stub.DiscardTurn(request, timeout=WAIT_S)
        assert (info.value.code(), text in (info.value.details() or "")) == (code, True), info.value.details()
    assert len(history_of(fake_llm, "e")) == 4, "a refused discard changes nothing"
    with pytest.raises(grpc.RpcError) as info:
        list(fake_llm.stub.Generate(llm_pb2.GenerateRequest(messages=[user("x")], turn_id="t"), timeout=WAIT_S))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "needs a session_id" in (info.value.details() or "")


def test_discard_turn_span(fake_llm: FakeLlm, span_exporter: InMemorySpanExporter) -> None:
    exporter = span_exporter
    generate(fake_llm.stub, session_id="sp", messages=[user("hello")], turn_id="t")
    discard(fake_llm, "sp", "t")
    spans = [s for s in exporter.get_finished_spans() if s.name == "llm.discard_turn"]
    assert spans and (spans[-1].attributes or {}).get("removed_messages") == 2
    assert (spans[-1].attributes or {}).get("turn_id") == "t"
