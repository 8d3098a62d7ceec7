"""The shared service runtime, on a real subprocess server with a fake engine whose load the
test controls: health transitions, reflection through the real grpcurl, graceful SIGTERM,
failed loads, trace context across processes, and stale generated code."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from service_runtime import telemetry
from service_runtime.launcher import ServiceProcess
from service_runtime.server import HOLD_LOAD_ENV
from tests.otlp_collector import OtlpCollector
from voice.tts.v1 import tts_pb2, tts_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
GRPCURL = str(Path(sys.executable).parent / "grpcurl")
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def start_fake(*args: str, env: dict[str, str] | None = None) -> ServiceProcess:
    return ServiceProcess(
        "fake", args=["--grace-s", "2", *args], module="tests.fake_runtime_service", stdin_pipe=True, env=env
    ).wait_listening()


def finish_loading(proc: ServiceProcess) -> None:
    assert proc.process.stdin is not None
    proc.process.stdin.write("loaded\n")
    proc.process.stdin.flush()


@pytest.fixture
def collector() -> Iterator[OtlpCollector]:
    c = OtlpCollector().start()
    yield c
    c.stop()


def test_health_is_not_serving_while_loading_then_serving_and_watch_reports_it() -> None:
    proc = start_fake()
    try:
        with grpc.insecure_channel(proc.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == NOT_SERVING
            # Calls before the model is loaded are refused with a message saying why.
            with pytest.raises(grpc.RpcError) as refused:
                tts_pb2_grpc.TextToSpeechStub(channel).ListVoices(tts_pb2.ListVoicesRequest(), timeout=5)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "still loading" in (refused.value.details() or "")

            watch = health.Watch(health_pb2.HealthCheckRequest(service="voice.tts.v1.TextToSpeech"), timeout=30)
            assert next(watch).status == NOT_SERVING
            finish_loading(proc)
            assert next(watch).status == SERVING
            watch.cancel()
            reply = tts_pb2_grpc.TextToSpeechStub(channel).ListVoices(tts_pb2.ListVoicesRequest(), timeout=5)
            assert [v.name for v in reply.voices] == ["fake-voice"]
        assert "SERVING on 127.0.0.1:" in proc.log and "backend=fake" in proc.log and "load_s=" in proc.log
    finally:
        assert proc.terminate() == 0


def test_the_test_only_load_hold_keeps_a_service_not_serving_until_a_line_arrives() -> None:
    # --on-load serve: the fake loads at once; only the runtime's hold (VOICE_TEST_HOLD_LOAD) keeps it loading.
    proc = start_fake("--on-load", "serve", env={HOLD_LOAD_ENV: "1"})
    try:
        proc.wait_for_log(lambda log: f"{HOLD_LOAD_ENV} is set" in log, timeout_s=30)
        with grpc.insecure_channel(proc.address) as channel:
            watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(), timeout=30)
            assert next(watch).status == NOT_SERVING
            finish_loading(proc)
            assert next(watch).status == SERVING
            watch.cancel()
    finally:
        assert proc.terminate() == 0


def test_reflection_lets_the_real_grpcurl_list_describe_and_call() -> None:
    proc = start_fake()
    try:
        finish_loading(proc)
        proc.wait_serving(30)

        def grpcurl(*args: str) -> str:
            done = subprocess.run([GRPCURL, "-plaintext", *args], capture_output=True, text=True, timeout=30)
            assert done.returncode == 0, done.stderr
            return done.stdout

        services = grpcurl(proc.address, "list").split()
        assert "voice.tts.v1.TextToSpeech" in services and "grpc.health.v1.Health" in services
        described = grpcurl(proc.address, "describe", "voice.tts.v1.TextToSpeech")
        assert "rpc StreamingSynthesize" in described and "rpc ListVoices" in described
        voices = json.loads(grpcurl("-d", "{}", proc.address, "voice.tts.v1.TextToSpeech/ListVoices"))
        assert voices["voices"][0]["name"] == "fake-voice"
        health = json.loads(grpcurl(proc.address, "grpc.health.v1.Health/Check"))
        assert health["status"] == "SERVING"
    finally:
        proc.terminate()


def test_sigterm_stops_gracefully_refuses_new_calls_and_flushes_spans(collector: OtlpCollector) -> None:
    # Spans are held by the batch processor (long delay) until the shutdown flush sends them.
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "600000"}
    proc = start_fake(env=env)
    finish_loading(proc)
    proc.wait_serving(30)
    with grpc.insecure_channel(proc.address) as channel:
        tts = tts_pb2_grpc.TextToSpeechStub(channel)
        tts.ListVoices(tts_pb2.ListVoicesRequest(), timeout=5)  # produces one span to flush
        in_flight = tts.Synthesize(tts_pb2.SynthesizeRequest(text="hold"), timeout=30)
        assert next(in_flight).text == "hold"  # the call is open on the server
        health = health_pb2_grpc.HealthStub(channel)
        watch = health.Watch(health_pb2.HealthCheckRequest(), timeout=30)
        assert next(watch).status == SERVING

        proc.process.send_signal(signal.SIGTERM)
        assert next(watch).status == NOT_SERVING
        # New calls during the grace period are refused with UNAVAILABLE.
        with grpc.insecure_channel(proc.address) as fresh:
            with pytest.raises(grpc.RpcError) as refused:
                tts_pb2_grpc.TextToSpeechStub(fresh).ListVoices(tts_pb2.ListVoicesRequest(), timeout=5)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        # The in-flight call was allowed to run until the grace period ended.
        with pytest.raises(grpc.RpcError):
            next(in_flight)
    assert proc.process.wait(30) == 0
    spans = collector.wait_for(lambda s: any(x.name == "tts.list_voices" for x in s), timeout_s=10)
    assert {s.service_name for s in spans} == {"fake-service"}


def test_a_model_that_fails_to_load_exits_nonzero_with_the_reason() -> None:
    proc = start_fake("--fail-load")
    finish_loading(proc)
    assert proc.process.wait(30) == 1
    proc.wait_listening()
    assert "model failed to load or warm up: fake model file is corrupt" in proc.log


def test_trace_context_crosses_the_grpc_call(collector: OtlpCollector) -> None:
    proc = start_fake(env={"OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint})
    try:
        finish_loading(proc)
        proc.wait_serving(30)
        client_tracer = TracerProvider().get_tracer("test")
        with client_tracer.start_as_current_span("turn") as turn:
            with grpc.insecure_channel(proc.address) as channel:
                tts_pb2_grpc.TextToSpeechStub(channel).ListVoices(
                    tts_pb2.ListVoicesRequest(), metadata=telemetry.outgoing_metadata(turn), timeout=5
                )
        spans = collector.wait_for(lambda s: any(x.name == "tts.list_voices" for x in s))
        (server_span,) = [s for s in spans if s.name == "tts.list_voices"]
        context = turn.get_span_context()
        assert server_span.trace_id == trace.format_trace_id(context.trace_id)
        assert server_span.parent_span_id == trace.format_span_id(context.span_id)
        assert server_span.service_name == "fake-service"
        assert server_span.attributes["voices"] == 1
    finally:
        proc.terminate()


def test_generated_code_matches_the_protos() -> None:
    """Fails when a .proto changed without `make proto`."""
    protos = sorted(str(p.relative_to(ROOT / "protos")) for p in (ROOT / "protos").glob("voice/*/v1/*.proto"))
    assert len(protos) == 3
    with tempfile.TemporaryDirectory() as out:
        done = subprocess.run(
            [sys.executable, "-m", "grpc_tools.protoc", "-I", "protos", f"--python_out={out}",
             f"--grpc_python_out={out}", f"--pyi_out={out}", *protos],
            cwd=ROOT, capture_output=True, text=True,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        generated = sorted(Path(out).rglob("*.py*"))
        assert len(generated) == 9
        for fresh in generated:
            committed = ROOT / "protos" / fresh.relative_to(out)
            assert committed.read_bytes() == fresh.read_bytes(), f"{committed} is stale: run `make proto`"
    assert os.path.exists(ROOT / "protos/voice/__init__.py")
