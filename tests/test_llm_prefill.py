"""Fast tests of the Prefill RPC with FakeLanguageEngine: the user's words are read into the
session's cache while they speak, revised words keep the common prefix, nothing is stored in the
history, a newer Prefill supersedes a queued one, and bad input gets INVALID_ARGUMENT."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import grpc
import pytest

from llm_service.engine import Sampling
from llm_service.servicer import LanguageModelServicer, ServiceConfig
from llm_service.validation import Limits
from service_runtime.admission import Admission
from service_runtime.engine_slot import EngineSlot
from tests.fake_llm_engine import FakeLanguageEngine
from voice.llm.v1 import llm_pb2, llm_pb2_grpc

WAIT_S = 10.0


@dataclass
class Served:
    stub: llm_pb2_grpc.LanguageModelStub
    engine: FakeLanguageEngine


@pytest.fixture()
def served() -> Iterator[Served]:
    engine = FakeLanguageEngine(n_ctx=200)
    slot: EngineSlot[FakeLanguageEngine] = EngineSlot("llm-service")
    slot.set(engine)
    config = ServiceConfig("Be brief.", Limits(default_max_tokens=20, max_tokens_limit=40), Sampling(), max_queue=2)
    admission = Admission()
    servicer = LanguageModelServicer(slot, config, admission)  # type: ignore[arg-type]
    loop = asyncio.new_event_loop()
    ready, stop, port = threading.Event(), asyncio.Event(), list[int]()

    async def run() -> None:
        server = grpc.aio.server(interceptors=[admission])
        llm_pb2_grpc.add_LanguageModelServicer_to_server(servicer, server)
        port.append(server.add_insecure_port("127.0.0.1:0"))
        await server.start()
        ready.set()
        await stop.wait()
        await server.stop(0)

    thread = threading.Thread(target=loop.run_until_complete, args=(run(),), daemon=True)
    thread.start()
    assert ready.wait(WAIT_S)
    channel = grpc.insecure_channel(f"127.0.0.1:{port[0]}")
    yield Served(llm_pb2_grpc.LanguageModelStub(channel), engine)
    engine.gate.set()
    channel.close()
    loop.call_soon_threadsafe(stop.set)
    thread.join(WAIT_S)
    servicer.worker.close()


def prefill(served: Served, text: str, sid: str = "p") -> llm_pb2.PrefillResponse:
    return served.stub.Prefill(llm_pb2.PrefillRequest(session_id=sid, text=text), timeout=WAIT_S)


def generate(served: Served, text: str, sid: str = "p") -> llm_pb2.GenerationSummary:
    request = llm_pb2.GenerateRequest(session_id=sid, messages=[llm_pb2.ChatMessage(role="user", content=text)])
    finals = [r.final for r in served.stub.Generate(request, timeout=WAIT_S) if r.HasField("final")]
    return finals[0]


def test_prefill_feeds_the_turn_and_stores_nothing(served: Served) -> None:
    first = prefill(served, "what is the")
    assert first.prompt_tokens > 0 and not first.superseded
    grown = prefill(served, "what is the capital of France?")
    assert grown.cached_prompt_tokens == first.prompt_tokens, "words already read are not read again"
    assert grown.end_of_turn_probability > 0.5 > first.end_of_turn_probability
    history = served.stub.GetSession(llm_pb2.GetSessionRequest(session_id="p"), timeout=WAIT_S).messages
    assert [m.role for m in history] == ["system"], "Prefill stores no message"
    summary = generate(served, "what is the capital of France?")
    assert summary.cached_prompt_tokens >= grown.prompt_tokens
    history = served.stub.GetSession(llm_pb2.GetSessionRequest(session_id="p"), timeout=WAIT_S).messages
    assert [m.role for m in history] == ["system", "user", "assistant"]


def test_revised_words_keep_only_the_common_prefix(served: Served) -> None:
    first = prefill(served, "book a table for two at seven")
    revised = prefill(served, "book a table for three at seven")
    assert revised.cached_prompt_tokens < first.prompt_tokens
    assert revised.cached_prompt_tokens == first.prompt_tokens - 3  # "two at seven" read again


def test_prefill_continues_a_session_after_its_replies(served: Served) -> None:
    generate(served, "hello")
    response = prefill(served, "and now")
    assert served.engine.prefills[-1][-1].content == "and now"
    assert [m.role for m in served.engine.prefills[-1]] == ["system", "user", "assistant", "user"]
    assert response.cached_prompt_tokens > 0


def test_a_newer_prefill_supersedes_a_queued_one(served: Served) -> None:
    served.engine.gate.clear()
    running = served.stub.Prefill.future(llm_pb2.PrefillRequest(session_id="q", text="one"), timeout=WAIT_S)
    assert wait_for(lambda: len(served.engine.prefills) == 0 and served_busy(served))
    older = served.stub.Prefill.future(llm_pb2.PrefillRequest(session_id="q", text="one two"), timeout=WAIT_S)
    assert wait_for(lambda: served.stub.GetStats(llm_pb2.GetStatsRequest()).queued_generations == 1)
    newer = served.stub.Prefill.future(llm_pb2.PrefillRequest(session_id="q", text="one two three"), timeout=WAIT_S)
    assert wait_for(lambda: served.stub.GetStats(llm_pb2.GetStatsRequest()).queued_generations == 2)
    served.engine.gate.set()
    assert not running.result().superseded
    assert older.result().superseded and older.result().prompt_tokens == 0
    assert not newer.result().superseded
    assert [m[-1].content for m in served.engine.prefills] == ["one", "one two three"]


def served_busy(served: Served) -> bool:
    return served.stub.GetStats(llm_pb2.GetStatsRequest()).active_generations == 1


def wait_for(predicate: Callable[[], bool], timeout_s: float = WAIT_S) -> bool:
    """Poll a cheap RPC-backed condition (the servicer exposes no event for queue changes)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return False


def test_queue_full_is_resource_exhausted(served: Served) -> None:
    served.engine.gate.clear()
    calls = [
        served.stub.Prefill.future(llm_pb2.PrefillRequest(session_id=f"s{i}", text="hi"), timeout=WAIT_S)
        for i in range(3)
    ]
    assert wait_for(lambda: served.stub.GetStats(llm_pb2.GetStatsRequest()).queued_generations == 2)
    with pytest.raises(grpc.RpcError) as info:
        prefill(served, "one too many", sid="s9")
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    served.engine.gate.set()
    assert all(not c.result().superseded for c in calls)


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
def test_bad_input_is_invalid_argument(served: Served, request_: llm_pb2.PrefillRequest, text: str) -> None:
    with pytest.raises(grpc.RpcError) as info:
        served.stub.Prefill(request_, timeout=WAIT_S)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert text in (info.value.details() or "")


def test_generate_scores_the_end_of_turn_first(served: Served) -> None:
    prefill(served, "what time is")
    request = llm_pb2.GenerateRequest(
        session_id="p",
        messages=[llm_pb2.ChatMessage(role="user", content="what time is it?")],
        score_end_of_turn=True,
    )
    replies = list(served.stub.Generate(request, timeout=WAIT_S))
    first, rest = replies[0], replies[1:]
    assert first.HasField("end_of_turn_probability") and first.end_of_turn_probability > 0.5 and not first.text
    assert not any(r.HasField("end_of_turn_probability") for r in rest)
    assert "".join(r.text for r in rest) == rest[-1].final.text == "You said: what time is it?"
    assert rest[-1].final.cached_prompt_tokens >= served.engine.count_tokens(served.engine.prefills[-1]) - 2
    plain = llm_pb2.GenerateRequest(session_id="p2", messages=[llm_pb2.ChatMessage(role="user", content="hi")])
    assert not any(r.HasField("end_of_turn_probability") for r in served.stub.Generate(plain, timeout=WAIT_S))


def test_score_end_of_turn_needs_a_user_message_last(served: Served) -> None:
    request = llm_pb2.GenerateRequest(
        messages=[
            llm_pb2.ChatMessage(role="user", content="hi"),
            llm_pb2.ChatMessage(role="assistant", content="hello"),
        ],
        score_end_of_turn=True,
    )
    with pytest.raises(grpc.RpcError) as info:
        list(served.stub.Generate(request, timeout=WAIT_S))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "score_end_of_turn" in (info.value.details() or "")
