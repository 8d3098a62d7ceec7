"""Real llm-service test on the default Qwen2.5 0.5B where the behaviour depends on reply
quality: a session's second turn recalls what the user said in the first."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from service_runtime.launcher import ServiceProcess
from voice.llm.v1 import llm_pb2, llm_pb2_grpc

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def stub() -> Iterator[llm_pb2_grpc.LanguageModelStub]:
    proc = ServiceProcess("llm", args=["--model", "qwen2.5-0.5b", "--n-ctx", "4096"])
    try:
        proc.wait_serving(300)
        assert "model=qwen2.5-0.5b" in proc.log
        with grpc.insecure_channel(proc.address) as channel:
            yield llm_pb2_grpc.LanguageModelStub(channel)
    finally:
        assert proc.terminate() == 0, proc.log[-2000:]


def turn(stub: llm_pb2_grpc.LanguageModelStub, sid: str, text: str) -> llm_pb2.GenerationSummary:
    request = llm_pb2.GenerateRequest(
        session_id=sid,
        messages=[llm_pb2.ChatMessage(role="user", content=text)],
        max_tokens=32,
        sampling=llm_pb2.SamplingOptions(temperature=0.0),
    )
    finals = [r.final for r in stub.Generate(request, timeout=60) if r.HasField("final")]
    assert len(finals) == 1
    return finals[0]


def test_second_turn_recalls_the_first(stub: llm_pb2_grpc.LanguageModelStub) -> None:
    first = turn(stub, "qwen-name", "Hi! My name is Priya and I live in Lisbon.")
    second = turn(stub, "qwen-name", "What is my name?")
    assert "Priya" in second.text, second.text
    assert second.prompt_tokens > first.prompt_tokens
    assert second.cached_prompt_tokens >= first.prompt_tokens
    # Spoken style: no markdown or lists.
    assert not any(mark in first.text + second.text for mark in ("**", "\n-", "#"))
    print(
        f"qwen ttft turn1 {first.time_to_first_token_ms:.0f} ms (cached {first.cached_prompt_tokens}/"
        f"{first.prompt_tokens}), turn2 {second.time_to_first_token_ms:.0f} ms (cached "
        f"{second.cached_prompt_tokens}/{second.prompt_tokens}), {second.tokens_per_second:.1f} tok/s"
    )


def prefill(stub: llm_pb2_grpc.LanguageModelStub, sid: str, text: str) -> llm_pb2.PrefillResponse:
    return stub.Prefill(llm_pb2.PrefillRequest(session_id=sid, text=text), timeout=60)


def test_prefill_scores_the_end_of_the_turn_and_feeds_the_reply(stub: llm_pb2_grpc.LanguageModelStub) -> None:
    unfinished = prefill(stub, "qwen-eot", "What is the capital of")
    revised = prefill(stub, "qwen-eot", "What is the capital of France?")
    assert unfinished.end_of_turn_probability < 0.05 < 0.5 < revised.end_of_turn_probability
    assert revised.cached_prompt_tokens >= unfinished.prompt_tokens - 1, "kept the words already read"
    # Without its final mark the complete imperative still scores as an end (tiny.en often omits it).
    assert prefill(stub, "qwen-eot-2", "Turn on the lights in the living room").end_of_turn_probability > 0.3
    assert prefill(stub, "qwen-eot-2", "The numbers are one, two,").end_of_turn_probability < 0.05
    reply = turn(stub, "qwen-eot", "What is the capital of France?")
    assert "Paris" in reply.text, reply.text
    assert reply.prompt_tokens - reply.cached_prompt_tokens <= 6, "only the end of the prompt was read"
    history = stub.GetSession(llm_pb2.GetSessionRequest(session_id="qwen-eot"), timeout=60).messages
    assert [m.role for m in history] == ["system", "user", "assistant"], "Prefill stored nothing"


def test_generate_scores_the_end_of_turn_before_the_reply(stub: llm_pb2_grpc.LanguageModelStub) -> None:
    request = llm_pb2.GenerateRequest(
        session_id="qwen-eot-generate",
        messages=[llm_pb2.ChatMessage(role="user", content="Tell me a joke.")],
        max_tokens=8,
        sampling=llm_pb2.SamplingOptions(temperature=0.0),
        score_end_of_turn=True,
    )
    replies = list(stub.Generate(request, timeout=60))
    assert replies[0].HasField("end_of_turn_probability") and replies[0].end_of_turn_probability > 0.5
    assert replies[-1].final.completion_tokens > 0 and replies[-1].final.text
