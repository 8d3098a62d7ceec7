"""tts-service on the real bundled Piper voice: the session's shared real server (tests/conftest.py).

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
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from service_runtime.launcher import ServiceProcess
from tests.helpers import GRPCURL, STT16K, traced, wait_until
from tests.otlp_collector import CollectedSpan, OtlpCollector
from tests.stack import SECOND_VOICE, Stack
from tests.wer import wer
from voice.stt.v1 import stt_pb2, stt_pb2_grpc
from voice.tts.v1 import tts_pb2, tts_pb2_grpc

pytestmark = pytest.mark.real

STT_RATE = 16000
SYNTHESIZE = "voice.tts.v1.TextToSpeech/Synthesize"
HANG_S = 30.0  # bounds a wait for something that must happen: a hang fails, a slow machine does not


@pytest.fixture()
def server(stack: Stack) -> ServiceProcess:
    return stack.procs["tts"]


@pytest.fixture()
def stub(tts: tts_pb2_grpc.TextToSpeechStub) -> tts_pb2_grpc.TextToSpeechStub:
    return tts


@pytest.fixture()
def whisper(stt: stt_pb2_grpc.SpeechToTextStub) -> stt_pb2_grpc.SpeechToTextStub:
    """What a listener hears, through the shared stack's speech recognizer."""
    return stt


def samples(responses: list[tts_pb2.SynthesizeResponse]) -> np.ndarray:
    return np.frombuffer(b"".join(r.audio for r in responses), dtype="<i2")


def transcribe(whisper: stt_pb2_grpc.SpeechToTextStub, audio: np.ndarray) -> str:
    reply = whisper.Recognize(stt_pb2.RecognizeRequest(config=STT16K, audio=audio.astype("<i2").tobytes()), timeout=60)
    return str(reply.text)


def rms(audio: np.ndarray) -> float:
    return float(np.sqrt(np.mean(audio.astype(np.float64) ** 2))) if audio.size else 0.0


def stats(stub: tts_pb2_grpc.TextToSpeechStub) -> tts_pb2.GetStatsResponse:
    return stub.GetStats(tts_pb2.GetStatsRequest(), timeout=5)


def wait_active(stub: tts_pb2_grpc.TextToSpeechStub, count: int, timeout_s: float = HANG_S) -> float:
    """Seconds until GetStats reports `count` active streams (fails after timeout_s)."""
    return wait_until(lambda: stats(stub).active_streams == count, timeout_s, f"{count} active streams")


def rpc_and_sentences(collector: OtlpCollector, trace_id: str) -> tuple[CollectedSpan, list[CollectedSpan]]:
    """The server's `tts.synthesize` span of the call in `trace_id` and its `tts.sentence` children."""
    spans = collector.wait_for(lambda got: any(s.trace_id == trace_id and s.name == "tts.synthesize" for s in got))
    (rpc,) = [s for s in spans if s.trace_id == trace_id and s.name == "tts.synthesize"]
    return rpc, [s for s in spans if s.parent_span_id == rpc.span_id and s.name == "tts.sentence"]


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


def test_speech_is_audible_long_enough_and_recognised(
    stub: tts_pb2_grpc.TextToSpeechStub, whisper: stt_pb2_grpc.SpeechToTextStub
) -> None:
    text = "The quick brown fox jumps over the lazy dog. Please call me back tomorrow morning."
    responses = list(stub.Synthesize(tts_pb2.SynthesizeRequest(text=text, sample_rate_hz=STT_RATE), timeout=60))
    assert {r.sample_rate_hz for r in responses} == {STT_RATE}
    audio = samples(responses)
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


def test_emoji_and_markdown_are_not_read_aloud(
    stub: tts_pb2_grpc.TextToSpeechStub, whisper: stt_pb2_grpc.SpeechToTextStub
) -> None:
    text = "Sure! 😊 **Paris** is the capital of *France*. 🇫🇷 It costs $5.20 on 2024-05-23."
    responses = list(stub.Synthesize(tts_pb2.SynthesizeRequest(text=text, sample_rate_hz=STT_RATE), timeout=60))
    spoken = " ".join(dict.fromkeys(r.spoken_text for r in responses))
    assert "*" not in spoken and "😊" not in spoken
    heard = transcribe(whisper, samples(responses)).lower()
    for word in ("asterisk", "smiling", "face", "flag", "star"):
        assert word not in heard, heard
    # Piper samples its prosody (VITS noise), so a word is now and then misheard ("Paris" as
    # "terrace"): the content must come through, not every word every time.
    content = ("paris", "capital", "france", "may")
    assert sum(word in heard for word in content) >= 3, heard
    assert "5.20" in heard or "dollars" in heard, heard  # Whisper writes amounts as digits


def test_other_scripts_and_control_characters_do_not_break_synthesis(stub: tts_pb2_grpc.TextToSpeechStub) -> None:
    text = "Привет мир. Hello 你好 world.\x00\x07 مرحبا [[ phonemes ]] done."
    responses = list(stub.Synthesize(tts_pb2.SynthesizeRequest(text=text), timeout=60))
    assert rms(samples(responses)) > 500
    assert all("Chinese" not in r.spoken_text and "\x00" not in r.spoken_text for r in responses)


# ---- latency: order of events (how soon is for `make bench`) ---------------------------------


def test_first_audio_arrives_before_the_rest_is_synthesized(
    stub: tts_pb2_grpc.TextToSpeechStub, collector: OtlpCollector
) -> None:
    text = (
        "Good morning. The forecast says it will rain until noon and clear up in the afternoon. "
        "Temperatures stay around fifteen degrees for most of the day. Tomorrow looks sunny and warm, "
        "with a light breeze from the west. Remember to take an umbrella this morning."
    )
    trace_id, metadata = traced()
    started = time.perf_counter()
    arrivals = []
    for r in stub.Synthesize(tts_pb2.SynthesizeRequest(text=text), timeout=60, metadata=metadata):
        arrivals.append((time.perf_counter() - started, r.sentence_index))
    print(
        f"\nSynthesize: first audio {arrivals[0][0] * 1000:.0f} ms, all {arrivals[-1][0] * 1000:.0f} ms, {len(text)} chars"
    )
    assert arrivals[0][1] == 0
    # On the server's clock: the first audio went out before the last sentence was synthesized.
    rpc, sentences = rpc_and_sentences(collector, trace_id)
    assert len(sentences) >= 3 and "first_audio" in rpc.events
    first_audio_ns = rpc.start_ns + rpc.attributes["ttfa_ms"] * 1e6
    assert first_audio_ns < max(s.start_ns for s in sentences), "the first audio waited for the whole text"


def test_streamed_fragments_are_spoken_sentence_by_sentence_while_text_still_arrives(
    stub: tts_pb2_grpc.TextToSpeechStub, whisper: stt_pb2_grpc.SpeechToTextStub
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
    assert wer(text, transcribe(whisper, samples(responses))) <= 0.2


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
    sentences = 40
    text = " ".join(f"This is sentence number {i} of a long answer that nobody will hear." for i in range(sentences))
    trace_id, metadata = traced()
    call = stub.Synthesize(tts_pb2.SynthesizeRequest(text=text), timeout=60, metadata=metadata)
    next(call)
    assert stats(stub).active_streams == 1
    cancelled_at = time.monotonic()
    call.cancel()
    wait_active(stub, 0)
    print(f"\ncancel → active_streams 0 in {(time.monotonic() - cancelled_at) * 1000:.0f} ms")
    after = list(stub.Synthesize(tts_pb2.SynthesizeRequest(text="Still here."), timeout=30))
    assert rms(samples(after)) > 500
    rpc, synthesized = rpc_and_sentences(collector, trace_id)
    assert "cancelled" in rpc.events
    assert len(synthesized) < sentences, "the worker went on with the cancelled text"


def test_slow_consumer_stops_synthesis_and_keeps_server_memory_bounded(
    server: ServiceProcess, stub: tts_pb2_grpc.TextToSpeechStub, collector: OtlpCollector
) -> None:
    # Its own connection without BDP probing: the client's receive window stays small, so
    # server-side flow control is visible (and a stalled window cannot affect other tests).
    with grpc.insecure_channel(server.address, options=[("grpc.http2.bdp_probe", 0)]) as slow_channel:
        _check_slow_consumer(server, tts_pb2_grpc.TextToSpeechStub(slow_channel), stub, collector)


def _check_slow_consumer(
    server: ServiceProcess,
    slow_stub: tts_pb2_grpc.TextToSpeechStub,
    stub: tts_pb2_grpc.TextToSpeechStub,
    collector: OtlpCollector,
) -> None:
    pid = server.process.pid
    rss_before_kib = proc_status(pid, "VmRSS")
    # ~4000 characters: ~4 minutes of audio, ~23 MiB at 48 kHz if the server buffered it all.
    sentences = 50
    text = " ".join(
        f"Sentence {i} is here to make plenty of audio for a listener who reads slowly." for i in range(sentences)
    )
    trace_id, metadata = traced()
    call = slow_stub.Synthesize(
        tts_pb2.SynthesizeRequest(text=text, sample_rate_hz=48000), timeout=120, metadata=metadata
    )
    next(call)
    # The client stops reading: once the bounded queue and the transport window are full the
    # server must stop synthesizing (its CPU time stops growing) instead of buffering the whole
    # answer; a server that went on would only go idle after all the sentences.
    window = threading.Event()  # never set: the interval over which CPU time is compared
    idle_windows, last = 0, cpu_s(pid)
    deadline = time.monotonic() + 120
    while idle_windows < 2:
        assert time.monotonic() < deadline, "the server never stopped working for a reader that does not read"
        window.wait(0.5)
        now = cpu_s(pid)
        idle_windows = idle_windows + 1 if now - last < 0.02 else 0
        last = now
    rss_kib = proc_status(pid, "VmRSS")
    print(f"\nslow consumer: server idle while stalled, RSS {rss_before_kib // 1024}→{rss_kib // 1024} MiB")
    # Reading again resumes the flow; memory stayed bounded throughout.
    peak_kib = rss_kib
    for _ in range(20):
        next(call)
        peak_kib = max(peak_kib, proc_status(pid, "VmRSS"))
    call.cancel()
    assert peak_kib - rss_before_kib < 100 * 1024, f"RSS grew {(peak_kib - rss_before_kib) // 1024} MiB"
    wait_active(stub, 0)
    _, synthesized = rpc_and_sentences(collector, trace_id)
    print(f"{len(synthesized)} of {sentences} sentences synthesized")
    assert len(synthesized) < sentences // 2, "the server kept synthesizing for a reader that does not read"


def test_too_many_streams_is_resource_exhausted(stub: tts_pb2_grpc.TextToSpeechStub) -> None:
    cap = stats(stub).max_streams
    feeds = [RequestFeed(tts_pb2.SynthesisConfig()) for _ in range(cap)]
    calls = [stub.StreamingSynthesize(iter(f), timeout=60) for f in feeds]
    try:
        wait_active(stub, cap)
        with pytest.raises(grpc.RpcError) as refused:
            list(stub.Synthesize(tts_pb2.SynthesizeRequest(text="One more."), timeout=10))
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert f"--max-streams={cap}" in (refused.value.details() or "")
    finally:
        for f in feeds:
            f.close()
        for c in calls:
            assert list(c) == []
    wait_active(stub, 0)


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
        (SECOND_VOICE, "en_US", 22050, "piper", False),
    ]
    responses = list(stub.Synthesize(tts_pb2.SynthesizeRequest(text="Hi.", voice=SECOND_VOICE), timeout=30))
    assert rms(samples(responses)) > 500


def test_spans_report_time_to_first_audio_per_request_and_sentence(
    stub: tts_pb2_grpc.TextToSpeechStub, collector: OtlpCollector
) -> None:
    text = "Span check one. Span check two."
    trace_id, metadata = traced()
    list(stub.Synthesize(tts_pb2.SynthesizeRequest(text=text), timeout=30, metadata=metadata))
    rpc, _ = rpc_and_sentences(collector, trace_id)
    assert rpc.attributes["text_chars"] == len(text)
    assert rpc.attributes["sentences"] == 2 and rpc.attributes["audio_s"] > 1.0
    assert 0 < rpc.attributes["ttfa_ms"] <= (rpc.end_ns - rpc.start_ns) / 1e6
    assert "first_audio" in rpc.events
    spans = collector.wait_for(lambda s: sum(x.parent_span_id == rpc.span_id for x in s) >= 2)
    children = [s for s in spans if s.parent_span_id == rpc.span_id]
    assert {c.name for c in children} == {"tts.sentence"}
    for child in children:
        assert {"text_chars", "ttfa_ms", "audio_s", "rtf"} <= set(child.attributes)
        assert child.attributes["audio_s"] > 0 and child.attributes["rtf"] > 0


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
