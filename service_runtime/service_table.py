"""The three services: kind, module and default port (a leaf: the server and the launcher read it)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServiceInfo:
    kind: str  # "stt", "llm", "tts"
    module: str
    default_port: int
    args: tuple[str, ...] = ()  # extra command-line flags


SERVICES: dict[str, ServiceInfo] = {
    "stt": ServiceInfo("stt", "stt_service", 50051),
    "llm": ServiceInfo("llm", "llm_service", 50052),
    "tts": ServiceInfo("tts", "tts_service", 50053),
}
