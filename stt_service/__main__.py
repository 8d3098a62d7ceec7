"""Streaming speech-to-text (Whisper + Silero VAD, adaptive endpointing) over gRPC: voice.stt.v1.SpeechToText."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping
from typing import Any

import grpc

from service_runtime import Admission, EngineSlot, EnvFlags, ServiceSpec
from service_runtime.config import float_in, int_at_least, int_in
from service_runtime.worker import ModelWorker
from stt_service.backends import create_engine, default_backend
from stt_service.clip import MAX_SILENCE_MS, MIN_CANDIDATE_SILENCE_MS, MIN_SILENCE_MS
from stt_service.endpointing import EndpointConfig
from stt_service.engine import Backend, DecodeOptions
from stt_service.self_check import check_engine
from stt_service.servicer import SERVICE_NAME, SpeechToTextServicer, SttRuntime
from stt_service.vad import SileroVad
from voice.stt.v1 import stt_pb2_grpc

log = logging.getLogger("stt-service")
# Measured on the 2-core box (README): 1 thread decodes a 3 s question in ~120 ms vs ~100 ms
# with 2, and leaves the other core to the LLM/TTS running at the same time.
DEFAULT_THREADS = 1
# An INTERIM decode at most every ~3 VAD frames: shorter intervals only add decodes.
MIN_INTERIM_INTERVAL_MS = 100


def add_arguments(flags: EnvFlags) -> None:
    flags.add(
        "--backend",
        default_backend(),
        "speech engine (default faster-whisper, or mlx on Apple Silicon when installed)",
        choices=list(Backend),
    )
    flags.add("--model", "", "model directory or size name (default: bundled tiny.en for faster-whisper)")
    flags.add("--threads", DEFAULT_THREADS, "CPU threads for the decoder", type=int_at_least(1))
    flags.add("--max-sessions", 8, "concurrent streams + unary calls; beyond: RESOURCE_EXHAUSTED", type=int_at_least(1))
    # The silences take the range a request may ask for (RecognitionConfig.*_silence_ms).
    silence_ms = int_in(MIN_SILENCE_MS, MAX_SILENCE_MS)
    flags.add(
        "--endpoint-ms",
        1000,
        "long endpoint: silence ending an utterance that looks unfinished",
        type=silence_ms,
    )
    flags.add(
        "--min-endpoint-ms",
        320,
        "short endpoint: silence ending an utterance that looks complete, lowered to --endpoint-ms if above",
        type=silence_ms,
    )
    flags.add(
        "--hinted-endpoint-ms",
        200,
        "endpoint for a turn the client's end-of-turn hint calls finished, lowered to --min-endpoint-ms if above",
        type=silence_ms,
    )
    flags.add(
        "--max-endpoint-ms",
        2000,
        "with end-of-turn hints: silence ending an utterance the hint calls surely unfinished (0); from --endpoint-ms"
        " at 0.2 up to this",
        type=silence_ms,
    )
    flags.add(
        "--candidate-ms",
        160,
        "pause after which a CANDIDATE_FINAL is decoded, below --min-endpoint-ms",
        type=int_in(MIN_CANDIDATE_SILENCE_MS, MAX_SILENCE_MS),
    )
    flags.add(
        "--interim-interval-ms", 700, "new speech between INTERIM decodes", type=int_at_least(MIN_INTERIM_INTERVAL_MS)
    )
    flags.add("--vad-threshold", 0.5, "Silero speech probability", type=float_in(0, 1, low_open=True, high_open=True))
    flags.add("--beam-size", 1, "1 = greedy", type=int_at_least(1))
    flags.add("--full-window", False, "encode full 30 s windows like stock Whisper (slower; for comparison)")


def endpoint_defaults(args: argparse.Namespace) -> EndpointConfig:
    """The server's endpointing: a --min-endpoint-ms above --endpoint-ms is lowered to it, and a
    --hinted-endpoint-ms above --min-endpoint-ms to that."""
    return EndpointConfig(
        endpoint_ms=args.endpoint_ms,
        min_endpoint_ms=min(args.min_endpoint_ms, args.endpoint_ms),
        candidate_ms=args.candidate_ms,
        hinted_endpoint_ms=min(args.hinted_endpoint_ms, args.min_endpoint_ms),
        max_endpoint_ms=max(args.max_endpoint_ms, args.endpoint_ms),
        interim_interval_ms=args.interim_interval_ms,
        threshold=args.vad_threshold,
        neg_threshold=max(0.05, args.vad_threshold - 0.15),
    )


def check_arguments(args: argparse.Namespace) -> None:
    defaults = endpoint_defaults(args)
    if defaults.candidate_ms >= defaults.min_endpoint_ms:
        raise ValueError(
            f"--candidate-ms {defaults.candidate_ms} must be below the short endpoint "
            f"(--min-endpoint-ms {args.min_endpoint_ms}, --endpoint-ms {args.endpoint_ms})"
        )


def create(args: argparse.Namespace, server: grpc.aio.Server, admission: Admission) -> Any:
    defaults = endpoint_defaults(args)
    slot: EngineSlot[SttRuntime] = EngineSlot("stt-service")
    servicer = SpeechToTextServicer(slot, defaults, args.max_sessions, admission)
    stt_pb2_grpc.add_SpeechToTextServicer_to_server(servicer, server)

    def load() -> Mapping[str, Any]:
        options = DecodeOptions(beam_size=args.beam_size, short_window=not args.full_window)
        engine = create_engine(args.backend, args.model, args.threads, options)
        vad = SileroVad()
        worker = ModelWorker("stt-decode")
        # Warm-up that proves the engine works: a known phrase must be heard (raises otherwise).
        heard = worker.run_sync(lambda: check_engine(engine, vad))
        log.info("self-check heard %r", heard)
        slot.set(SttRuntime(engine, vad, worker))
        return {
            **engine.describe(),
            "vad": "silero-v6",
            "endpoint_ms": defaults.endpoint_ms,
            "min_endpoint_ms": defaults.min_endpoint_ms,
            "max_endpoint_ms": defaults.max_endpoint_ms,
            "candidate_ms": defaults.candidate_ms,
            "max_sessions": args.max_sessions,
        }

    return load


SPEC = ServiceSpec("stt", [SERVICE_NAME], add_arguments, create, __doc__ or "", check_arguments=check_arguments)
main = SPEC.main


if __name__ == "__main__":
    main()
