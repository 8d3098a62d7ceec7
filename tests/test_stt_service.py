"""stt-service end to end: the real bundled tiny.en model behind the session's shared real server
(tests/conftest.py)."""

from __future__ import annotations

import base64
import json
import queue
import subprocess
import threading
import time
from collections.abc import Callable, Iterator

import grpc
import numpy as np
import pytest
import soxr

from service_runtime.launcher import ServiceProcess
from tests.helpers import FIXTURES, GRPCURL, pcm, wait_until
from tests.stack import Stack
from tests.wer import word_errors
from voice.stt.v1 import stt_pb2, stt_pb2_grpc

pytestmark = pytest.mark.real

SPOKEN = [f for f in FIXTURES.values() if f["kind"] in ("question", "paused")]
PAUSED = [f for f in FIXTURES.values() if f["kind"] == "paused"]
Ev = stt_pb2.StreamingRecognizeResponse
MIN_ENDPOINT_MS, ENDPOINT_MS = 320, 1000


@pytest.fixture()
def server(stack: Stack) -> ServiceProcess:
    return stack.procs["stt"]


@pytest.fixture()
def stub(stt: stt_pb2_grpc.SpeechToTextStub) -> stt_pb2_grpc.SpeechToTextStub:
    return stt


def requests(
    audio: bytes,
    chunk_ms: int = 100,
    rate: int = 16000,
    realtime: bool | Callable[[int], bool] = False,
    **config: object,
) -> Iterator[stt_pb2.StreamingRecognizeRequest]:
    """The config, then `audio` in chunks: paced like a microphone if `realtime`, or while
    `realtime(ms)` says so for the chunk starting at audio position `ms` (the rest goes at once)."""
    yield stt_pb2.StreamingRecognizeRequest(config=stt_pb2.RecognitionConfig(sample_rate_hz=rate, **config))
    step = max(2, rate * chunk_ms // 1000 * 2)
    started = time.monotonic()
    for i in range(0, len(audio), step):
        if realtime is True or (callable(realtime) and realtime(i * 1000 // (2 * rate))):
            time.sleep(max(0.0, started + i / 2 / rate - time.monotonic()))
        yield stt_pb2.StreamingRecognizeRequest(audio=audio[i : i + step])


def stream(stub: stt_pb2_grpc.SpeechToTextStub, reqs: Iterator[stt_pb2.StreamingRecognizeRequest]) -> list:
    return list(stub.StreamingRecognize(reqs, timeout=60))


def finals(events: list) -> list:
    return [e for e in events if e.event == Ev.FINAL]


def test_startup_log_names_backend_model_and_endpoints(server: ServiceProcess) -> None:
    line = next(line for line in server.log.splitlines() if "SERVING on" in line)
    for key in ("backend=faster-whisper", "model=tiny.en", "path=", "threads=", "vad=silero", "min_endpoint_ms=320"):
        assert key in line


def test_recognize_fixtures_word_error_rate(stub: stt_pb2_grpc.SpeechToTextStub) -> None:
    errors = words = 0
    for item in SPOKEN:
        reply = stub.Recognize(
            stt_pb2.RecognizeRequest(config=stt_pb2.RecognitionConfig(sample_rate_hz=16000), audio=pcm(item["file"]))
        )
        e, n = word_errors(item["text"], reply.text)
        assert e / n <= 0.4, (item["text"], reply.text)
        errors, words = errors + e, words + n
        assert reply.audio_duration_ms == pytest.approx(item["duration_ms"], abs=2)
        assert reply.segments and reply.segments[0].start_ms <= item["speech_start_ms"] + 150
    assert errors / words <= 0.12


@pytest.mark.parametrize("chunk_ms", [20, 100, 1000])
def test_streaming_gives_one_final_per_question_within_the_endpoint(
    stub: stt_pb2_grpc.SpeechToTextStub, chunk_ms: int
) -> None:
    errors = words = 0
    for item in SPOKEN:
        events = stream(stub, requests(pcm(item["file"]), chunk_ms))
        assert events[0].event == Ev.SPEECH_STARTED
        assert abs(events[0].start_ms - item["speech_start_ms"]) <= 120
        (final,) = finals(events)  # paused fixtures too: no premature split
        assert final.is_final and final.utterance_index == 0
        e, n = word_errors(item["text"], final.text)
        errors, words = errors + e, words + n
        assert abs(final.end_ms - item["speech_end_ms"]) <= 120
        if final.endpoint_silence_ms:  # ended by the endpoint, not by the end of the stream
            assert final.from_candidate and final.decode_ms == 0
            assert final.endpoint_silence_ms in (MIN_ENDPOINT_MS, ENDPOINT_MS)
            silence = final.audio_position_ms - final.end_ms
            assert final.endpoint_silence_ms <= silence <= final.endpoint_silence_ms + 40
        candidates = [e for e in events if e.event == Ev.CANDIDATE_FINAL]
        assert candidates and candidates[-1].text == final.text
    assert errors / words <= 0.12


def test_complete_questions_use_the_short_endpoint(stub: stt_pb2_grpc.SpeechToTextStub) -> None:
    short = 0
    questions = [f for f in SPOKEN if f["kind"] == "question"]
    for item in questions:
        (final,) = finals(stream(stub, requests(pcm(item["file"]))))
        short += final.endpoint_silence_ms == MIN_ENDPOINT_MS
    assert short >= len(questions) // 2 + 1


@pytest.mark.parametrize("item", PAUSED, ids=[f["file"] for f in PAUSED])
def test_mid_sentence_pause_gives_one_final_in_real_time(stub: stt_pb2_grpc.SpeechToTextStub, item: dict) -> None:
    # Paced through the speech and its pause (where a premature FINAL would come); the silence after
    # the speech goes at once (the endpoint counts audio, not clock time).
    events = stream(stub, requests(pcm(item["file"]), 20, realtime=lambda ms: ms < item["speech_end_ms"]))
    (final,) = finals(events)
    assert word_errors(item["text"], final.text)[0] <= 2, final.text
    assert final.end_ms >= item["speech_end_ms"] - 120  # covers the words after the pause


def test_final_arrives_soon_after_the_end_of_speech_in_real_time(stub: stt_pb2_grpc.SpeechToTextStub) -> None:
    item = FIXTURES["weather_paris.wav"]
    sent_at: dict[int, float] = {}

    def paced() -> Iterator[stt_pb2.StreamingRecognizeRequest]:
        for i, req in enumerate(requests(pcm(item["file"]), 20, realtime=True)):
            sent_at[i * 20] = time.monotonic()  # request i>0 carries audio up to i*20 ms
            yield req

    got = None
    for event in stub.StreamingRecognize(paced(), timeout=30):
        if event.event == Ev.FINAL:
            got = (event, time.monotonic())
            break
    assert got is not None
    final, at = got
    end_chunk = -(-item["speech_end_ms"] // 20) * 20
    print(f"\nFINAL {(at - sent_at[end_chunk]) * 1000:.0f} ms after the end of speech was sent")
    # Decided on the short endpoint: after 320 ms of silence (audio time) following the speech's
    # end. How soon it arrives on a given machine is a timing claim for `make bench`.
    assert final.endpoint_silence_ms == MIN_ENDPOINT_MS
    assert abs(final.end_ms - item["speech_end_ms"]) <= 120, final


# 0.95: a sure hint, which ends the turn early whether or not the candidate text ends in . ? !
# (tiny.en's candidate sometimes has no final mark; with 0.9 the test then got the long endpoint).
# 0.05: surely unfinished, waits from the long endpoint (at 0.2) toward the server's 2000 ms (at 0).
@pytest.mark.parametrize(("probability", "endpoint_ms"), [(0.95, 200), (0.5, ENDPOINT_MS), (0.05, 1750)])
def test_end_of_turn_hint_sets_the_endpoint_in_real_time(
    stub: stt_pb2_grpc.SpeechToTextStub, probability: float, endpoint_ms: int
) -> None:
    """The client answers each CANDIDATE_FINAL with a hint (as the orchestrator does with the LLM's
    end-of-turn probability): a likely end gives the 200 ms endpoint, an unlikely one the long one,
    a surely unfinished one longer still."""
    hints: queue.Queue[str] = queue.Queue()

    def paced() -> Iterator[stt_pb2.StreamingRecognizeRequest]:
        audio = pcm("living_room_lights.wav") + bytes(2 * 16000 * 2)  # 2 s of silence after it
        for req in requests(audio, 20, realtime=True, end_of_turn_hints=True, candidate_silence_ms=100):
            while not hints.empty():
                text = hints.get()
                yield stt_pb2.StreamingRecognizeRequest(
                    end_of_turn=stt_pb2.EndOfTurnHint(text=text, probability=probability)
                )
            yield req

    events = []
    for event in stub.StreamingRecognize(paced(), timeout=30):
        events.append(event)
        if event.event == Ev.CANDIDATE_FINAL:
            hints.put(event.text)
        if event.event == Ev.FINAL:
            break
    (final,) = finals(events)
    assert final.endpoint_silence_ms == endpoint_ms
    assert final.audio_position_ms - final.end_ms >= endpoint_ms


def test_interim_results_arrive_before_the_final(stub: stt_pb2_grpc.SpeechToTextStub) -> None:
    # INTERIMs are best effort (skipped while the decoder is busy): paced like a microphone until
    # the first one arrives, then the rest of the speech at once.
    interim = threading.Event()
    events = []
    reqs = requests(pcm("recipe.wav"), 100, realtime=lambda _ms: not interim.is_set(), interim_results=True)
    for event in stub.StreamingRecognize(reqs, timeout=60):
        events.append(event)
        if event.event == Ev.INTERIM:
            interim.set()
    kinds = [e.event for e in events]
    assert Ev.INTERIM in kinds
    assert kinds.index(Ev.INTERIM) < kinds.index(Ev.FINAL)
    assert all(e.text for e in events if e.event == Ev.INTERIM)


def test_two_utterances_give_two_finals(stub: stt_pb2_grpc.SpeechToTextStub) -> None:
    item = FIXTURES["two_utterances.wav"]
    got = finals(stream(stub, requests(pcm(item["file"]), 100)))
    assert [f.utterance_index for f in got] == [0, 1]
    for final, part in zip(got, item["utterances"], strict=True):
        assert word_errors(part["text"], final.text)[0] <= 3, final.text
        assert abs(final.end_ms - part["speech_end_ms"]) <= 120


@pytest.mark.parametrize("name", ["noise.wav", "silence.wav"])
def test_noise_and_silence_give_no_words(stub: stt_pb2_grpc.SpeechToTextStub, name: str) -> None:
    events = stream(stub, requests(pcm(name), 100))
    assert not [e for e in events if e.text]
    reply = stub.Recognize(
        stt_pb2.RecognizeRequest(config=stt_pb2.RecognitionConfig(sample_rate_hz=16000), audio=pcm(name))
    )
    assert reply.text == "" and not reply.segments


def test_empty_streams_end_without_error(stub: stt_pb2_grpc.SpeechToTextStub) -> None:
    assert stream(stub, iter([])) == []
    assert stream(stub, requests(b"")) == []


def test_half_close_flushes_speech_in_progress(stub: stt_pb2_grpc.SpeechToTextStub) -> None:
    item = FIXTURES["leap_year.wav"]
    cut = (item["speech_end_ms"] + 50) * 32  # stream ends 50 ms after the speech: no endpoint yet
    (final,) = finals(stream(stub, requests(pcm(item["file"])[:cut])))
    assert final.endpoint_silence_ms == 0 and word_errors(item["text"], final.text)[0] <= 2


def test_44k1_input_is_resampled(stub: stt_pb2_grpc.SpeechToTextStub) -> None:
    item = FIXTURES["tokyo_time.wav"]
    audio = np.frombuffer(pcm(item["file"]), dtype=np.int16).astype(np.float32)
    audio44 = np.clip(soxr.resample(audio, 16000, 44100), -32768, 32767).astype("<i2").tobytes()
    (final,) = finals(stream(stub, requests(audio44, 100, rate=44100)))
    assert word_errors(item["text"], final.text)[0] <= 1, final.text
    assert abs(final.end_ms - item["speech_end_ms"]) <= 120
    reply = stub.Recognize(
        stt_pb2.RecognizeRequest(config=stt_pb2.RecognitionConfig(sample_rate_hz=44100), audio=audio44)
    )
    assert word_errors(item["text"], reply.text)[0] <= 1


def test_utterance_longer_than_the_model_window_keeps_its_words(stub: stt_pb2_grpc.SpeechToTextStub) -> None:
    questions = [f["file"] for f in SPOKEN if f["kind"] == "question"]
    names = questions + questions[1::2] + questions[::2]  # no sentence run repeats right after itself
    gap = np.zeros(16000 * 150 // 1000, dtype=np.int16)  # 150 ms: shorter than the candidate pause
    parts, text = [], []
    for name in names:
        item = FIXTURES[name]
        audio = np.frombuffer(pcm(name), dtype=np.int16)
        parts += [audio[item["speech_start_ms"] * 16 : item["speech_end_ms"] * 16], gap]
        text.append(item["text"])
    audio = np.concatenate([*parts, np.zeros(16000, dtype=np.int16)])
    assert len(audio) / 16000 > 30
    (final,) = finals(stream(stub, requests(audio.tobytes(), 1000)))
    e, n = word_errors(" ".join(text), final.text)
    assert e / n <= 0.2, final.text
    reply = stub.Recognize(
        stt_pb2.RecognizeRequest(config=stt_pb2.RecognitionConfig(sample_rate_hz=16000), audio=audio.tobytes())
    )
    e, n = word_errors(" ".join(text), reply.text)
    assert e / n <= 0.2, reply.text
    assert len(reply.segments) >= 2


def _code(call: Iterator) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        list(call)
    return info.value.code(), info.value.details() or ""


@pytest.mark.parametrize(
    ("reqs", "needle"),
    [
        ([stt_pb2.StreamingRecognizeRequest(audio=b"\x00\x00")], "first StreamingRecognizeRequest must carry `config`"),
        (
            [stt_pb2.StreamingRecognizeRequest(config=stt_pb2.RecognitionConfig(sample_rate_hz=16000))] * 2,
            "sent twice",
        ),
        (
            [
                stt_pb2.StreamingRecognizeRequest(config=stt_pb2.RecognitionConfig(sample_rate_hz=16000)),
                stt_pb2.StreamingRecognizeRequest(audio=b"\x00\x00\x00"),
            ],
            "odd number of bytes",
        ),
        ([stt_pb2.StreamingRecognizeRequest(config=stt_pb2.RecognitionConfig(sample_rate_hz=5000))], "8000 to 48000"),
        (
            [stt_pb2.StreamingRecognizeRequest(config=stt_pb2.RecognitionConfig(sample_rate_hz=16000, encoding=7))],
            "LINEAR16",
        ),
        (
            [stt_pb2.StreamingRecognizeRequest(config=stt_pb2.RecognitionConfig(sample_rate_hz=16000, language="fr"))],
            "English-only",
        ),
        (
            [
                stt_pb2.StreamingRecognizeRequest(
                    config=stt_pb2.RecognitionConfig(sample_rate_hz=16000, endpoint_silence_ms=20)
                )
            ],
            "100 to 5000",
        ),
        (
            [
                stt_pb2.StreamingRecognizeRequest(config=stt_pb2.RecognitionConfig(sample_rate_hz=16000)),
                stt_pb2.StreamingRecognizeRequest(end_of_turn=stt_pb2.EndOfTurnHint(text="hi", probability=0.9)),
            ],
            "need config.end_of_turn_hints",
        ),
    ],
    ids=["audio-first", "two-configs", "odd-bytes", "5khz", "encoding", "language", "endpoint", "hint-not-enabled"],
)
def test_bad_streams_are_invalid_argument(stub: stt_pb2_grpc.SpeechToTextStub, reqs: list, needle: str) -> None:
    code, details = _code(stub.StreamingRecognize(iter(reqs), timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert needle in details


def test_bad_recognize_is_invalid_argument(stub: stt_pb2_grpc.SpeechToTextStub) -> None:
    for config, audio, needle in [
        (stt_pb2.RecognitionConfig(sample_rate_hz=5000), b"\x00\x00", "8000 to 48000"),
        (stt_pb2.RecognitionConfig(sample_rate_hz=16000), b"\x00", "odd number of bytes"),
        (stt_pb2.RecognitionConfig(), b"", "sample_rate_hz=0"),
    ]:
        with pytest.raises(grpc.RpcError) as info:
            stub.Recognize(stt_pb2.RecognizeRequest(config=config, audio=audio), timeout=10)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and needle in (info.value.details() or "")


def test_oversized_chunk_is_resource_exhausted_and_server_still_serves(stub: stt_pb2_grpc.SpeechToTextStub) -> None:
    big = [
        stt_pb2.StreamingRecognizeRequest(config=stt_pb2.RecognitionConfig(sample_rate_hz=16000)),
        stt_pb2.StreamingRecognizeRequest(audio=b"\x00" * (5 * 1024 * 1024)),
    ]
    code, _ = _code(stub.StreamingRecognize(iter(big), timeout=20))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    reply = stub.Recognize(
        stt_pb2.RecognizeRequest(config=stt_pb2.RecognitionConfig(sample_rate_hz=16000), audio=pcm("timer.wav"))
    )
    assert "timer" in reply.text.lower()


def stats(stub: stt_pb2_grpc.SpeechToTextStub) -> stt_pb2.GetStatsResponse:
    return stub.GetStats(stt_pb2.GetStatsRequest(), timeout=5)


def test_session_cap_and_cancel_free_sessions(stub: stt_pb2_grpc.SpeechToTextStub) -> None:
    wait_until(lambda: stats(stub).active_sessions == 0, 30, "no STT session open")
    before = stats(stub)
    cap = before.max_sessions
    feeds: list[queue.Queue] = []
    calls = []
    for i in range(cap):
        q: queue.Queue = queue.Queue()
        q.put(stt_pb2.StreamingRecognizeRequest(config=stt_pb2.RecognitionConfig(sample_rate_hz=16000)))
        if i == 0:
            q.put(stt_pb2.StreamingRecognizeRequest(audio=pcm("weather_paris.wav")[: 16000 * 2]))
        feeds.append(q)
        calls.append(stub.StreamingRecognize(iter(q.get, None), timeout=60))
    first = calls[0]
    speech = threading.Event()

    def read_first() -> None:  # the first stream must be live: wait for its SPEECH_STARTED
        try:
            for event in first:
                if event.event == Ev.SPEECH_STARTED:
                    speech.set()
        except grpc.RpcError:
            pass

    reader = threading.Thread(target=read_first, daemon=True)
    reader.start()
    assert speech.wait(30)
    wait_until(lambda: stats(stub).active_sessions == cap, 30, f"{cap} STT sessions open")
    extra = [stt_pb2.StreamingRecognizeRequest(config=stt_pb2.RecognitionConfig(sample_rate_hz=16000))]
    code, details = _code(stub.StreamingRecognize(iter(extra), timeout=10))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "max-sessions" in details
    with pytest.raises(grpc.RpcError) as info:
        stub.Recognize(stt_pb2.RecognizeRequest(config=stt_pb2.RecognitionConfig(sample_rate_hz=16000)), timeout=10)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    for call, q in zip(calls, feeds, strict=True):  # client cancel mid-stream
        call.cancel()
        q.put(None)  # release the request iterator thread
    reader.join(10)
    wait_until(lambda: stats(stub).active_sessions == 0, 30, "every cancelled STT session freed")
    assert stats(stub).total_sessions >= before.total_sessions + cap


def test_grpcurl_recognize(server: ServiceProcess) -> None:
    body = {"config": {"sample_rate_hz": 16000}, "audio": base64.b64encode(pcm("tokyo_time.wav")).decode()}
    out = subprocess.run(
        [GRPCURL, "-plaintext", "-d", "@", server.address, "voice.stt.v1.SpeechToText/Recognize"],
        input=json.dumps(body),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    reply = json.loads(out.stdout)
    assert word_errors(FIXTURES["tokyo_time.wav"]["text"], reply["text"])[0] <= 1, reply
