"""Orchestrator: the client that chains STT, LLM and TTS.

Public API (used by the benchmark): `ServiceAddresses`, `Conversation`, `TurnResult`, the sinks
`MemorySink` / `WavFileSink` / `SoundDeviceSink`, and `ServiceDownError`.
"""

from orchestrator.audio import AudioSink, MemorySink, SoundDeviceSink, WavFileSink, load_wav_pcm16
from orchestrator.config import ServiceAddresses
from orchestrator.pipeline import Conversation, TurnResult
from orchestrator.services import ServiceDownError, check_services

__all__ = [
    "AudioSink",
    "Conversation",
    "MemorySink",
    "ServiceAddresses",
    "ServiceDownError",
    "SoundDeviceSink",
    "TurnResult",
    "WavFileSink",
    "check_services",
    "load_wav_pcm16",
]
