"""Orchestrator: the client that chains STT, LLM and TTS.

Public API (the benchmark, a web UI and other front ends build on these):
`ServiceAddresses`, `Conversation`, `TurnResult`; the UI events `ConversationEvent` / `EventKind`,
`Listener` and `EventQueue` (async iteration of the events); the sinks `AudioSink` /
`MemorySink` / `WavFileSink` / `SoundDeviceSink`; `ServiceDownError` / `ServiceCallError`,
`check_services`; `channel(target)`, the one place gRPC channels are made.
"""

from orchestrator.audio import AudioSink, MemorySink, WavFileSink, load_wav_pcm16
from orchestrator.clients import ServiceCallError, ServiceDownError, channel, check_services
from orchestrator.config import ServiceAddresses
from orchestrator.conversation import Conversation
from orchestrator.device import SoundDeviceSink
from orchestrator.events import ConversationEvent, EventKind, EventQueue, Listener
from orchestrator.timing import TurnResult

__all__ = [
    "AudioSink",
    "Conversation",
    "ConversationEvent",
    "EventKind",
    "EventQueue",
    "Listener",
    "MemorySink",
    "ServiceAddresses",
    "ServiceCallError",
    "ServiceDownError",
    "SoundDeviceSink",
    "TurnResult",
    "WavFileSink",
    "channel",
    "check_services",
    "load_wav_pcm16",
]
