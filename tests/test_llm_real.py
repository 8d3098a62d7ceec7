"""Real llm-service tests on the bundled SmolLM2-135M (fast; behaviour that does not depend on
reply quality), on the session's shared stack (tests/conftest.py), whose small context makes
history truncation reachable in a few turns. (The queue cap: tests/test_reliability_services.py.)"""

from __future__ import annotations

import json
import subprocess

import grpc
import pytest

from service_runtime.launcher import ServiceProcess
from tests.helpers import GRPCURL, user, wait_until
from tests.stack import LLM_MAX_TOKENS_LIMIT, LLM_N_CTX, Stack
from voice.llm.v1 import llm_pb2, llm_pb2_grpc

pytestmark = pytest.mark.real
TIMEOUT_S = 60.0
LONG = "Tell me a long story about a dragon who lives in a castle by the sea."


@pytest.fixture()
def server(stack: Stack) -> ServiceProcess:
    return stack.procs["llm"]


@pytest.fixture()
def stub(llm: llm_pb2_grpc.LanguageModelStub) -> llm_pb2_grpc.LanguageModelStub:
    return llm


def run(
    stub: llm_pb2_grpc.LanguageModelStub, request: llm_pb2.GenerateRequest
) -> tuple[list[str], llm_pb2.GenerationSummary]:
    deltas: list[str] = []
    final = None
    for reply in stub.Generate(request, timeout=TIMEOUT_S):
        if reply.HasField("final"):
            final = reply.final
        else:
            deltas.append(reply.text)
    assert final is not None
    return deltas, final


def test_start_up_log_names_backend_model_and_context(server: ServiceProcess) -> None:
    log = server.log
    assert "backend=llama-cpp" in log and "model=smollm2-135m" in log and "threads=" in log
    assert f"n_ctx={LLM_N_CTX}" in log and "system_prompt_chars=" in log


def test_deltas_join_to_the_final_text(stub: llm_pb2_grpc.LanguageModelStub) -> None:
    deltas, final = run(stub, llm_pb2.GenerateRequest(messages=[user("What is the capital of France?")], max_tokens=24))
    assert len(deltas) > 1
    assert "".join(deltas) == final.text and final.text.strip()
    assert final.finish_reason in (llm_pb2.STOP, llm_pb2.LENGTH)
    assert final.completion_tokens > 0 and final.prompt_tokens > 0
    assert final.time_to_first_token_ms > 0 and final.tokens_per_second > 0


@pytest.mark.parametrize("temperature", [0.0, 0.9])
def test_same_seed_same_reply(stub: llm_pb2_grpc.LanguageModelStub, temperature: float) -> None:
    sampling = llm_pb2.SamplingOptions(temperature=temperature, seed=1234)
    request = llm_pb2.GenerateRequest(
        messages=[user("Name a fruit and describe it.")], max_tokens=20, sampling=sampling
    )
    texts = {run(stub, request)[1].text for _ in range(2)}
    assert len(texts) == 1


def test_second_turn_reuses_the_first(stub: llm_pb2_grpc.LanguageModelStub) -> None:
    sid = "real-two-turns"
    greedy = llm_pb2.SamplingOptions(temperature=0.0)
    _, first = run(
        stub,
        llm_pb2.GenerateRequest(session_id=sid, messages=[user("My name is Priya.")], max_tokens=16, sampling=greedy),
    )
    _, second = run(
        stub,
        llm_pb2.GenerateRequest(session_id=sid, messages=[user("What is my name?")], max_tokens=16, sampling=greedy),
    )
    assert second.prompt_tokens > first.prompt_tokens + first.completion_tokens
    # Turn 2 only reads its new tokens: everything up to the end of reply 1 is cached.
    assert second.cached_prompt_tokens >= first.prompt_tokens
    # Turn 1 of a new session reuses the cached system prompt.
    assert first.cached_prompt_tokens > 0
    history = stub.GetSession(llm_pb2.GetSessionRequest(session_id=sid))
    assert [m.role for m in history.messages] == ["system", "user", "assistant", "user", "assistant"]
    assert history.messages[2].content == first.text
    assert history.context_tokens == LLM_N_CTX


def test_history_truncation_with_small_context(stub: llm_pb2_grpc.LanguageModelStub) -> None:
    sid = "real-truncation"
    # ~12 tokens a sentence: each turn takes over a third of the context, so the third one
    # does not fit next to the first two (the fewest tokens the model must read to get there).
    filler = "Here is some context about my day that you should remember. " * (30 * LLM_N_CTX // 1024)
    dropped = 0
    for i in range(3):
        _, final = run(
            stub,
            llm_pb2.GenerateRequest(session_id=sid, messages=[user(f"Turn {i}. {filler}")], max_tokens=16),
        )
        assert final.prompt_tokens + 16 <= LLM_N_CTX
        dropped += final.dropped_messages
    assert dropped >= 2
    history = stub.GetSession(llm_pb2.GetSessionRequest(session_id=sid))
    assert history.messages[0].role == "system" and history.messages[1].role == "user"
    assert not history.messages[1].content.startswith("Turn 0.")
    assert history.history_tokens <= LLM_N_CTX


def test_record_heard_reply_changes_the_session(stub: llm_pb2_grpc.LanguageModelStub) -> None:
    sid = "real-barge-in"
    _, final = run(stub, llm_pb2.GenerateRequest(session_id=sid, messages=[user(LONG)], max_tokens=40))
    heard = " ".join(final.text.split()[:3])
    stored = stub.RecordHeardReply(llm_pb2.RecordHeardReplyRequest(session_id=sid, heard_text=heard))
    assert stored.stored_text == heard
    history = stub.GetSession(llm_pb2.GetSessionRequest(session_id=sid))
    assert history.messages[-1] == llm_pb2.ChatMessage(role="assistant", content=heard)
    _, after = run(stub, llm_pb2.GenerateRequest(session_id=sid, messages=[user("Stop. Say hi.")], max_tokens=8))
    # The unheard tokens are not reused from the KV cache.
    assert after.cached_prompt_tokens < final.prompt_tokens + final.completion_tokens
    with pytest.raises(grpc.RpcError) as info:
        stub.RecordHeardReply(llm_pb2.RecordHeardReplyRequest(session_id="real-unknown", heard_text="x"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_cancel_mid_stream_frees_the_model(stub: llm_pb2_grpc.LanguageModelStub) -> None:
    sid = "real-cancel"
    call = stub.Generate(
        llm_pb2.GenerateRequest(session_id=sid, messages=[user(LONG)], max_tokens=96), timeout=TIMEOUT_S
    )
    got = [next(call).text, next(call).text]
    assert all(isinstance(t, str) for t in got)
    call.cancel()
    # The next request is served (it waits only for the cancelled one to stop: how long is printed).
    _, final = run(stub, llm_pb2.GenerateRequest(messages=[user("Say yes.")], max_tokens=4))
    assert final.completion_tokens > 0
    # The model worker goes idle (its bookkeeping may end just after the last reply was sent).
    wait_until(
        lambda: (s := stub.GetStats(llm_pb2.GetStatsRequest())).active_generations == 0 and s.queued_generations == 0,
        TIMEOUT_S,
        "the model worker idle",
    )
    # The cancelled turn is stored with an empty (interrupted) reply, not the partial text.
    history = stub.GetSession(llm_pb2.GetSessionRequest(session_id=sid))
    assert history.messages[-1] == llm_pb2.ChatMessage(role="assistant", content="")
    print(f"cancel -> the next reply's queue wait {final.queue_wait_ms:.1f} ms")


def test_discarded_speculative_turns_leave_no_trace(stub: llm_pb2_grpc.LanguageModelStub) -> None:
    """A speculative turn cancelled mid-stream, and one that completed, are removed by DiscardTurn:
    the next turn sees (and is given) exactly the history of a session where they never happened."""
    greedy = llm_pb2.SamplingOptions(temperature=0.0)

    def turn(sid: str, text: str, turn_id: str = "", max_tokens: int = 12) -> llm_pb2.GenerationSummary:
        request = llm_pb2.GenerateRequest(
            session_id=sid, turn_id=turn_id, messages=[user(text)], max_tokens=max_tokens, sampling=greedy
        )
        return run(stub, request)[1]

    def history(sid: str) -> list[tuple[str, str]]:
        return [(m.role, m.content) for m in stub.GetSession(llm_pb2.GetSessionRequest(session_id=sid)).messages]

    def discard(sid: str, turn_id: str) -> int:
        return stub.DiscardTurn(llm_pb2.DiscardTurnRequest(session_id=sid, turn_id=turn_id)).removed_messages

    sid, control = "real-discard", "real-discard-control"
    first = turn(sid, "My name is Priya.", "1-a")
    turn(control, "My name is Priya.")
    call = stub.Generate(
        llm_pb2.GenerateRequest(session_id=sid, turn_id="2-b", messages=[user(LONG)], max_tokens=96, sampling=greedy),
        timeout=TIMEOUT_S,
    )
    next(call)
    call.cancel()
    assert discard(sid, "2-b") == 2, "user message + interrupted marker removed"
    turn(sid, "Can you tell me", "3-c")  # completed before the user went on talking
    assert discard(sid, "3-c") == 2
    assert discard(sid, "3-c") == 0
    assert history(sid) == history(control)
    after = turn(sid, "What is my name?", "4-d")
    expected = turn(control, "What is my name?")
    assert after.prompt_tokens == expected.prompt_tokens
    # The kept prefix (system prompt + turn 1) is still cached; the discarded turns' tokens are not.
    assert first.prompt_tokens <= after.cached_prompt_tokens < after.prompt_tokens - 3
    assert after.text == expected.text
    assert history(sid) == history(control)


@pytest.mark.parametrize(
    ("request_", "code"),
    [
        (llm_pb2.GenerateRequest(), grpc.StatusCode.INVALID_ARGUMENT),
        (llm_pb2.GenerateRequest(messages=[llm_pb2.ChatMessage(role="robot", content="hi")]), grpc.StatusCode.INVALID_ARGUMENT),
        (llm_pb2.GenerateRequest(messages=[user("")]), grpc.StatusCode.INVALID_ARGUMENT),
        (llm_pb2.GenerateRequest(messages=[user("hi")], sampling=llm_pb2.SamplingOptions(temperature=3)), grpc.StatusCode.INVALID_ARGUMENT),
        (llm_pb2.GenerateRequest(messages=[user("hi")], sampling=llm_pb2.SamplingOptions(top_p=1.5)), grpc.StatusCode.INVALID_ARGUMENT),
        (llm_pb2.GenerateRequest(messages=[user("hi")], sampling=llm_pb2.SamplingOptions(top_k=5000)), grpc.StatusCode.INVALID_ARGUMENT),
        (llm_pb2.GenerateRequest(messages=[user("hi")], sampling=llm_pb2.SamplingOptions(repeat_penalty=2.5)), grpc.StatusCode.INVALID_ARGUMENT),
        (llm_pb2.GenerateRequest(messages=[user("hi")], max_tokens=LLM_MAX_TOKENS_LIMIT + 1), grpc.StatusCode.INVALID_ARGUMENT),
        (llm_pb2.GenerateRequest(messages=[user("word " * (2 * LLM_N_CTX))]), grpc.StatusCode.INVALID_ARGUMENT),
        (llm_pb2.GenerateRequest(session_id="no spaces allowed", messages=[user("hi")]), grpc.StatusCode.INVALID_ARGUMENT),
    ],
)  # fmt: skip
def test_bad_input(
    stub: llm_pb2_grpc.LanguageModelStub, request_: llm_pb2.GenerateRequest, code: grpc.StatusCode
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        list(stub.Generate(request_, timeout=TIMEOUT_S))
    assert info.value.code() == code
    assert info.value.details()


def test_reset_session(stub: llm_pb2_grpc.LanguageModelStub) -> None:
    run(stub, llm_pb2.GenerateRequest(session_id="real-reset", messages=[user("Hello")], max_tokens=4))
    reply = stub.ResetSession(llm_pb2.ResetSessionRequest(session_id="real-reset"))
    assert reply.dropped_messages == 3
    with pytest.raises(grpc.RpcError) as info:
        stub.ResetSession(llm_pb2.ResetSessionRequest(session_id="real-reset"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_grpcurl_streams_deltas(server: ServiceProcess) -> None:
    out = subprocess.run(
        [GRPCURL, "-plaintext", "-d", '{"messages":[{"role":"user","content":"Hi"}],"max_tokens":8}',
         server.address, "voice.llm.v1.LanguageModel/Generate"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    decoder = json.JSONDecoder()
    text, messages = out.stdout.strip(), []
    while text:
        obj, end = decoder.raw_decode(text)
        messages.append(obj)
        text = text[end:].strip()
    assert len(messages) >= 3 and "final" in messages[-1]
    assert "".join(m.get("text", "") for m in messages[:-1]) == messages[-1]["final"]["text"]


def test_real_tokens_decode_multibyte_text() -> None:
    """The model's own tokens for accents, CJK and emoji stream back as whole characters."""
    from llama_cpp import Llama

    from llm_service.llama_engine import TokenTextDecoder
    from llm_service.models import resolve_model

    vocab = Llama(str(resolve_model("smollm2-135m")[1]), vocab_only=True, verbose=False)
    text = "Café, naïve 😀 日本語 ok"
    tokens = vocab.tokenize(text.encode("utf-8"), add_bos=False)
    decoder = TokenTextDecoder()
    deltas = [decoder.feed(vocab.detokenize([t])) for t in tokens]
    vocab.close()
    assert "".join(deltas) + decoder.flush() == text
    assert all("\ufffd" not in d for d in deltas)
