"""Where the three services are (flags with environment fallbacks STT_ADDRESS, LLM_ADDRESS,
TTS_ADDRESS), and a conversation's settings.

An address is any gRPC target: `127.0.0.1:50052`, several replicas as
`ipv4:127.0.0.1:50052,127.0.0.1:50062`, or `dns:///llm.voice.svc.cluster.local:50052`.
TLS towards the services: --service-tls-ca / --service-tls-cert / --service-tls-key (env VOICE_TLS_*).
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, fields
from typing import Any, Literal, TypeVar

from service_runtime.tls import ClientTls, add_client_arguments
from voice.llm.v1 import llm_pb2

Mode = Literal["streaming", "sync"]
# `typing.Self` needs Python 3.11; the project supports 3.10.
SettingsT = TypeVar("SettingsT", bound="Settings")

DEFAULT_ADDRESSES = {"stt": "127.0.0.1:50051", "llm": "127.0.0.1:50052", "tts": "127.0.0.1:50053"}
SERVICE_NAMES = {"stt": "stt-service", "llm": "llm-service", "tts": "tts-service"}
# RecognitionConfig's *_silence_ms (stt.proto): 0 = the server's default, else from 100 to 5000 ms.
SILENCE_MS = (100, 5000)
CANDIDATE_SILENCE_MS = (32, 5000)  # a candidate may come at the first pause the STT's VAD sees


@dataclass(frozen=True)
class ServiceAddresses:
    stt: str = DEFAULT_ADDRESSES["stt"]
    llm: str = DEFAULT_ADDRESSES["llm"]
    tts: str = DEFAULT_ADDRESSES["tts"]
    # TLS (and the client certificate for mutual TLS) for all three; None = plaintext.
    tls: ClientTls | None = None

    @classmethod
    def from_env(cls) -> ServiceAddresses:
        """Addresses from STT_ADDRESS / LLM_ADDRESS / TTS_ADDRESS, else the default ports on 127.0.0.1."""
        return cls(
            **{
                kind: os.environ.get(f"{kind.upper()}_ADDRESS") or DEFAULT_ADDRESSES[kind] for kind in DEFAULT_ADDRESSES
            },
            tls=ClientTls.from_env(),
        )

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        env = ServiceAddresses.from_env()
        for kind in DEFAULT_ADDRESSES:
            parser.add_argument(
                f"--{kind}-address",
                default=getattr(env, kind),
                metavar="TARGET",
                help=f"{SERVICE_NAMES[kind]} gRPC target: HOST:PORT, or replicas as ipv4:H:P,H:P or "
                f"dns:///NAME:PORT (env {kind.upper()}_ADDRESS, default %(default)s)",
            )
        add_client_arguments(parser)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ServiceAddresses:
        tls = ClientTls.from_args(args) if hasattr(args, "service_tls_ca") else ClientTls.from_env()
        return cls(stt=args.stt_address, llm=args.llm_address, tts=args.tts_address, tls=tls)

    def items(self) -> list[tuple[str, str]]:
        """(kind, address) in chain order."""
        return [("stt", self.stt), ("llm", self.llm), ("tts", self.tts)]


@dataclass(frozen=True)
class Settings:
    """A conversation's options, as passed to `Conversation` (0 / "" / None: the service's default)."""

    mode: Mode = "streaming"
    session_id: str = ""  # "": a new random one
    preemptive: bool = True
    language: str = ""
    voice: str = ""
    max_tokens: int = 0
    sampling: llm_pb2.SamplingOptions | None = None
    endpoint_silence_ms: int = 0
    candidate_silence_ms: int = 0
    min_endpoint_silence_ms: int = 0
    # Streaming: read the user's words into the LLM while they speak (Prefill) and let the LLM's
    # end-of-turn probability set the STT endpoint (200 ms when finished, longer when not).
    end_of_turn_hints: bool = True

    @classmethod
    def from_args(cls: type[SettingsT], args: argparse.Namespace, **overrides: Any) -> SettingsT:
        """From the flags `orchestrator talk / demo / web` share (see `orchestrator.__main__`)."""
        options: dict[str, Any] = {
            "mode": args.mode,
            "session_id": args.session_id or "",
            "preemptive": not args.no_preemptive,
            "voice": args.voice,
            "max_tokens": args.max_tokens,
            "sampling": sampling_options(args.temperature, args.seed),
            "endpoint_silence_ms": args.endpoint_silence_ms,
            "candidate_silence_ms": args.candidate_silence_ms,
            "min_endpoint_silence_ms": args.min_endpoint_silence_ms,
        }
        return cls(**{**options, **overrides})

    def keywords(self) -> dict[str, Any]:
        """These settings as `Conversation` keyword arguments."""
        return {f.name: getattr(self, f.name) for f in fields(Settings)}


def sampling_options(temperature: float | None, seed: int | None) -> llm_pb2.SamplingOptions | None:
    """The LLM sampling fields the user set (None: all the server's defaults)."""
    if temperature is None and seed is None:
        return None
    options = llm_pb2.SamplingOptions()
    if temperature is not None:
        options.temperature = temperature
    if seed is not None:
        options.seed = seed
    return options
