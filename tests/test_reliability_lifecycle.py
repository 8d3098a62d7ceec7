"""Start-up and shutdown of each real service (tests/test_runtime.py covers the runtime with a fake
engine): NOT_SERVING while the model loads (the load is held until the test has seen that),
SERVING only once the model answers at full speed, and SIGTERM during a stream: NOT_SERVING,
in-flight work finishes within the grace period, new calls get UNAVAILABLE, exit code 0. One
fresh server per service (it is stopped by the test)."""

from __future__ import annotations

import queue
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service_runtime.launcher import ServiceProcess
from service_runtime.server import HOLD_LOAD_ENV
from tests.helpers import FIXTURES, STT16K, pcm, wait_until
from tests.stack import SMOLLM
from tests.wer import wer
from voice.llm.v1 import llm_pb2, llm_pb2_grpc
from voice.stt.v1 import stt_pb2, stt_pb2_grpc
from voice.tts.v1 import tts_pb2, tts_pb2_grpc

pytestmark = pytest.mark.real

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
GRACE_S = 5.0
ARGS = {"stt": [], "llm": [*SMOLLM, "--max-tokens-limit", "48"], "tts": []}
# What each service logs once its model has run (warm-up / self-check), before it reports SERVING.
WARMED_UP = {"stt": "self-check heard", "llm": "warmup_s=", "tts": "warmup_s="}
SERVICE = {"stt": "voice.stt.v1.SpeechToText", "llm": "voice.llm.v1.LanguageModel", "tts": "voice.tts.v1.TextToSpeech"}


def first_call(kind: str, channel: grpc.Channel) -> Callable[[], Any]:
    """The service's main RPC, as a user would make it first."""
    if kind == "stt":
        stub = stt_pb2_grpc.SpeechToTextStub(channel)
        return lambda: stub.Recognize(stt_pb2.RecognizeRequest(config=STT16K, audio=pcm("timer.wav")), timeout=30)
    if kind == "llm":
        llm = llm_pb2_grpc.LanguageModelStub(channel)
        request = llm_pb2.GenerateRequest(messages=[llm_pb2.ChatMessage(role="user", content="Say hi.")], max_tokens=8)
        return lambda: list(llm.Generate(request, timeout=30))
    tts = tts_pb2_grpc.TextToSpeechStub(channel)
    return lambda: list(tts.Synthesize(tts_pb2.SynthesizeRequest(text="Hello there, how are you?"), timeout=30))


class InFlight:
    """A stream open on the server when SIGTERM arrives, finished by the test after the signal."""

    def __init__(self, kind: str, channel: grpc.Channel) -> None:
        self.kind = kind
        self.feed: queue.Queue[Any] = queue.Queue()
        if kind == "stt":
            audio = pcm("weather_paris.wav")
            self.rest = [audio[i : i + 3200] for i in range(0, len(audio), 3200)]
            self.feed.put(stt_pb2.StreamingRecognizeRequest(config=STT16K))
            for chunk in self.rest[:20]:  # the first 2 s: speech has started, no final yet
                self.feed.put(stt_pb2.StreamingRecognizeRequest(audio=chunk))
            self.call: Iterator[Any] = stt_pb2_grpc.SpeechToTextStub(channel).StreamingRecognize(
                iter(self.feed.get, None), timeout=60
            )
        elif kind == "llm":
            request = llm_pb2.GenerateRequest(
                messages=[llm_pb2.ChatMessage(role="user", content="Tell me a story about a dragon.")], max_tokens=48
            )
            self.call = llm_pb2_grpc.LanguageModelStub(channel).Generate(request, timeout=60)
        else:
            text = "This is the first sentence. Here is a second one. And a third, to finish."
            self.call = tts_pb2_grpc.TextToSpeechStub(channel).Synthesize(
                tts_pb2.SynthesizeRequest(text=text), timeout=60
            )
        self.first = next(self.call)  # the call is running on the server

    def finish(self) -> list[Any]:
        if self.kind == "stt":
            for chunk in self.rest[20:]:
                self.feed.put(stt_pb2.StreamingRecognizeRequest(audio=chunk))
            self.feed.put(None)
        return [self.first, *self.call]

    def check(self, responses: list[Any]) -> None:
        if self.kind == "stt":
            final = [r.text for r in responses if r.event == stt_pb2.StreamingRecognizeResponse.FINAL]
            assert len(final) == 1 and wer(FIXTURES["weather_paris.wav"]["text"], final[0]) < 0.3, final
        elif self.kind == "llm":
            assert responses[-1].HasField("final") and responses[-1].final.completion_tokens > 0
        else:
            assert sum(r.sentence_end for r in responses) == 3


def release_the_load(proc: ServiceProcess) -> None:
    assert proc.process.stdin is not None
    proc.process.stdin.write("load\n")
    proc.process.stdin.flush()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", ["stt", "llm", "tts"])
def test_health_follows_the_model_and_sigterm_drains_in_flight_work(kind: str) -> None:
    # The model load is held until the test has seen the service loading (VOICE_TEST_HOLD_LOAD: the
    # runtime waits for a line on stdin), so that state is observed however fast the model loads.
    proc = ServiceProcess(
        kind, args=[*ARGS[kind], "--grace-s", str(GRACE_S)], env={HOLD_LOAD_ENV: "1"}, stdin_pipe=True
    )
    try:
        proc.wait_for_log(lambda log: f"{HOLD_LOAD_ENV} is set" in log, timeout_s=60)
        with grpc.insecure_channel(proc.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            watch = health.Watch(health_pb2.HealthCheckRequest(service=SERVICE[kind]), timeout=120)
            assert next(watch).status == NOT_SERVING
            call = first_call(kind, channel)
            with pytest.raises(grpc.RpcError) as early:
                call()
            assert early.value.code() == grpc.StatusCode.UNAVAILABLE and "loading" in (early.value.details() or "")
            release_the_load(proc)
            assert next(watch).status == SERVING
            # SERVING means warmed up: the model ran once (the start-up check) before SERVING.
            wait_until(lambda: "SERVING on" in proc.log, 30, "the SERVING log line")  # logged just after
            serving_at = proc.log.index("SERVING on")
            assert WARMED_UP[kind] in proc.log[: serving_at + proc.log[serving_at:].index("\n")], proc.log[-3000:]
            timings = []
            for _ in range(3):
                started = time.perf_counter()
                call()
                timings.append(time.perf_counter() - started)
            print(
                f"\n{kind}: first call after SERVING {timings[0] * 1000:.0f} ms, then {min(timings[1:]) * 1000:.0f} ms"
            )

            in_flight = InFlight(kind, channel)
            signalled = time.monotonic()
            proc.process.send_signal(signal.SIGTERM)
            assert next(watch).status == NOT_SERVING
            # Done watching: cancel now, while the server drains, rather than racing its exit
            # (a Watch still open when the loop closes is logged by grpc as a CancelledError).
            watch.cancel()
            with grpc.insecure_channel(proc.address) as fresh:
                with pytest.raises(grpc.RpcError) as refused:
                    first_call(kind, fresh)()
                assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            # Completed, not cancelled: the server waits for in-flight calls up to the grace period.
            in_flight.check(in_flight.finish())
            print(f"{kind}: in-flight call finished {(time.monotonic() - signalled) * 1000:.0f} ms after SIGTERM")
        assert proc.process.wait(GRACE_S + 10) == 0, proc.log[-3000:]
        assert "Traceback" not in proc.log, proc.log[-3000:]
    finally:
        proc.kill()
