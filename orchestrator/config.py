"""Where the three services are (flags with environment fallbacks STT_ADDRESS, LLM_ADDRESS,
TTS_ADDRESS), and a conversation's settings."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from typing import Literal

from voice.llm.v1 import llm_pb2

Mode = Literal["streaming", "sync"]

DEFAULT_ADDRESSES = {"stt": "127.0.0.1:50051", "llm": "127.0.0.1:50052", "tts": "127.0.0.1:50053"}
SERVICE_NAMES = {"stt": "stt-service", "llm": "llm-service", "tts": "tts-service"}


@dataclass(frozen=True)
class ServiceAddresses:
    stt: str = DEFAULT_ADDRESSES["stt"]
    llm: str = DEFAULT_ADDRESSES["llm"]
    tts: str = DEFAULT_ADDRESSES["tts"]

    @classmethod
    def from_env(cls) -> ServiceAddresses:
        """Addresses from STT_ADDRESS / LLM_ADDRESS / TTS_ADDRESS, else the default ports on 127.0.0.1."""
        return cls(
            **{kind: os.environ.get(f"{kind.upper()}_ADDRESS") or DEFAULT_ADDRESSES[kind] for kind in DEFAULT_ADDRESSES}
        )

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        env = ServiceAddresses.from_env()
        for kind in DEFAULT_ADDRESSES:
            parser.add_argument(
                f"--{kind}-address",
                default=getattr(env, kind),
                metavar="HOST:PORT",
                help=f"{SERVICE_NAMES[kind]} address (env {kind.upper()}_ADDRESS, default %(default)s)",
            )

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ServiceAddresses:
        return cls(stt=args.stt_address, llm=args.llm_address, tts=args.tts_address)

    def items(self) -> list[tuple[str, str]]:
        """(kind, address) in chain order."""
        return [("stt", self.stt), ("llm", self.llm), ("tts", self.tts)]


@dataclass(frozen=True)
class Settings:
    """A conversation's options, as passed to `Conversation` (0 / "" / None: the service's default)."""

    mode: Mode = "streaming"
    session_id: str = ""
    language: str = ""
    voice: str = ""
    max_tokens: int = 0
    sampling: llm_pb2.SamplingOptions | None = None
    endpoint_silence_ms: int = 0
    candidate_silence_ms: int = 0
    min_endpoint_silence_ms: int = 0
