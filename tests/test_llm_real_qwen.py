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
