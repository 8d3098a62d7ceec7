"""Numbers for stt_service/README.md: decode time / RTF / WER per thread count and encoder window,
and end-of-speech -> FINAL latency over real-time paced gRPC streams.

    .venv/bin/python -m stt_service.measure [--skip-stream]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from stt_service.backends import bundled_model_dir
from stt_service.ct2_engine import FasterWhisperEngine
from stt_service.engine import DecodeOptions

AUDIO = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "audio"


def _pcm(name: str) -> bytes:
    with wave.open(str(AUDIO / name)) as w:
        return w.readframes(w.getnframes())


def _clips(items: list[dict]) -> list[tuple[str, np.ndarray]]:
    clips = []
    for it in items:
        audio = np.frombuffer(_pcm(it["file"]), dtype=np.int16).astype(np.float32) / 32768
        parts = it.get("utterances") or ([it] if it["kind"] in ("question", "paused") else [])
        for p in parts:
            clips.append((p["text"], audio[(p["speech_start_ms"] - 200) * 16 : (p["speech_end_ms"] + 200) * 16]))
    return clips


def decode_table(items: list[dict]) -> None:
    from tests.wer import word_errors

    clips = _clips(items)
    print(
        f"{len(clips)} utterances, {min(len(a) for _, a in clips) / 16000:.1f}-{max(len(a) for _, a in clips) / 16000:.1f} s"
    )
    for threads in (1, 2):
        for label, opts in [("30s window", DecodeOptions(short_window=False)), (">=6s window", DecodeOptions())]:
            engine = FasterWhisperEngine(str(bundled_model_dir()), threads=threads, options=opts)
            engine.transcribe(clips[0][1])
            times, errors, words, audio_s = [], 0, 0, 0.0
            for ref, audio in clips:
                t = time.perf_counter()
                text = engine.transcribe(audio).text
                times.append(time.perf_counter() - t)
                e, n = word_errors(ref, text)
                errors, words, audio_s = errors + e, words + n, audio_s + len(audio) / 16000
            print(
                f"threads={threads} {label:12s} WER {errors / words:.3f}  decode p50 {statistics.median(times) * 1000:.0f} ms"
                f"  max {max(times) * 1000:.0f} ms  RTF {sum(times) / audio_s:.3f}"
            )


def stream_latency(items: list[dict]) -> None:
    import grpc

    from service_runtime.launcher import ServiceProcess
    from voice.stt.v1 import stt_pb2, stt_pb2_grpc

    proc = ServiceProcess("stt").wait_serving(120)
    lat, cand = [], []
    try:
        with grpc.insecure_channel(proc.address) as channel:
            stub = stt_pb2_grpc.SpeechToTextStub(channel)
            for it in items:
                if it["kind"] not in ("question", "paused"):
                    continue
                audio, t0 = _pcm(it["file"]), [0.0]

                def reqs(audio: bytes = audio, t0: list[float] = t0) -> Iterator[stt_pb2.StreamingRecognizeRequest]:
                    yield stt_pb2.StreamingRecognizeRequest(config=stt_pb2.RecognitionConfig(sample_rate_hz=16000))
                    t0[0] = time.monotonic()
                    for i in range(0, len(audio), 640):  # 20 ms chunks at real time
                        time.sleep(max(0.0, t0[0] + i / 32000 - time.monotonic()))
                        yield stt_pb2.StreamingRecognizeRequest(audio=audio[i : i + 640])

                for ev in stub.StreamingRecognize(reqs()):
                    # wall time since the end of speech was sent (speech_end_ms of audio after t0)
                    since_end = (time.monotonic() - t0[0]) * 1000 - it["speech_end_ms"]
                    if ev.event == ev.CANDIDATE_FINAL:
                        cand.append(since_end)
                    if ev.event == ev.FINAL:
                        lat.append(since_end)
                        print(
                            f"  {it['file']:24s} FINAL +{since_end:4.0f} ms (endpoint {ev.endpoint_silence_ms}) {ev.text!r}"
                        )
                        break
    finally:
        proc.terminate()
    print(
        f"end of speech -> CANDIDATE_FINAL p50 {statistics.median(cand):.0f} ms; -> FINAL p50 {statistics.median(lat):.0f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--skip-stream", action="store_true")
    args = parser.parse_args()
    items = json.loads((AUDIO / "transcripts.json").read_text())
    decode_table(items)
    if not args.skip_stream:
        stream_latency(items)


if __name__ == "__main__":
    main()
