"""The seam between `Conversation` and the page: conversation options, typed UI events → JSON.

`EventAdapter` is the conversation's listener: it turns each `ConversationEvent` into one JSON
event of the web protocol (docs/WEB.md) and hands it to `send`.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator import (
    Conversation,
    ConversationEvent,
    EventKind,
    ServiceAddresses,
    ServiceCallError,
    ServiceDownError,
    TurnResult,
)
from orchestrator.config import SERVICE_NAMES, Settings
from orchestrator.report import jaeger_link
from service_runtime import telemetry

Send = Callable[[dict[str, Any]], None]

# Waterfall rows: (key in the `turn` event, label), in the order of the turn.
WATERFALL = [
    ("stt_final_ms", "STT final"),
    ("llm_ttft_ms", "first token"),
    ("first_sentence_ms", "first sentence"),
    ("tts_ttfa_ms", "first audio"),
    ("dead_air_ms", "dead air"),
]


@dataclass(frozen=True)
class ConversationOptions(Settings):
    """What every web conversation is created with (from the command line); each gets its own session."""

    addresses: ServiceAddresses = field(default_factory=ServiceAddresses)

    @classmethod
    def from_args(cls, args: argparse.Namespace, **overrides: Any) -> ConversationOptions:
        return super().from_args(args, addresses=ServiceAddresses.from_args(args), session_id="", **overrides)

    def conversation(self, *, sink: Any, listener: Callable[[ConversationEvent], None], barge_in: bool) -> Conversation:
        return Conversation(self.addresses, **self.keywords(), barge_in=barge_in, sink=sink, listener=listener)


def turn_event(result: TurnResult, index: int, speech_end_sample: int | None) -> dict[str, Any]:
    """The `turn` event: transcript, reply, what was heard and the latency waterfall."""
    record = result.as_dict()
    trace_id = result.trace_id if result.trace_id.strip("0") else None  # no tracer provider: not recorded
    return {
        "type": "turn",
        "index": index,
        "transcript": result.transcript,
        "reply": result.reply,
        "heard_reply": result.heard_reply,
        "barge_in": result.barge_in,
        "preemptive_used": result.preemptive_used,
        "mode": result.mode,
        "audio_s": round(result.audio_s, 3),
        "total_ms": record["total_ms"],
        "waterfall": [{"key": key, "label": label, "ms": record[key]} for key, label in WATERFALL],
        "trace_id": trace_id,
        "trace_url": jaeger_link(trace_id) if trace_id and telemetry.exporting() else None,
        "speech_end_sample": speech_end_sample,
    }


@dataclass(frozen=True)
class TurnLog:
    """The server's console: one line per session start/end and per turn; `--json` appends each turn."""

    quiet: bool = False
    json_path: Path | None = None

    def line(self, text: str) -> None:
        if not self.quiet:
            print(text, flush=True)

    def turn(self, result: TurnResult, index: int) -> None:
        dead_air = "-" if result.dead_air_ms is None else f"{result.dead_air_ms:.0f} ms"
        cut = " (barge-in)" if result.barge_in else ""
        self.line(
            f"{result.session_id} turn {index}: dead air {dead_air}{cut} · {result.transcript!r} → {result.heard_reply!r}"
        )
        if self.json_path is not None:
            with self.json_path.open("a", encoding="utf-8") as out:
                out.write(json.dumps({**result.as_dict(), "input": "web"}, ensure_ascii=False) + "\n")


def error_event(error: BaseException) -> dict[str, Any]:
    """An `error` event; a service failure names the service."""
    if isinstance(error, ServiceDownError | ServiceCallError):
        code = "service_down" if isinstance(error, ServiceDownError) else "service_error"
        return {
            "type": "error",
            "code": code,
            "service": SERVICE_NAMES.get(error.kind, error.kind),
            "message": str(error),
        }
    return {"type": "error", "code": "internal", "message": f"{type(error).__name__}: {error}"}


class EventAdapter:
    """A `Conversation` listener that sends each UI event to the page as JSON."""

    def __init__(
        self, send: Send, speech_end_sample: Callable[[TurnResult], int | None], log: TurnLog | None = None
    ) -> None:
        self._send = send
        self._speech_end_sample = speech_end_sample
        self._log = log or TurnLog(quiet=True)
        self.turns = 0

    def __call__(self, event: ConversationEvent) -> None:
        kind = event.kind
        if kind is EventKind.TURN:
            if event.result is not None:
                self.turns += 1
                self._send(turn_event(event.result, self.turns, self._speech_end_sample(event.result)))
                self._log.turn(event.result, self.turns)
        elif kind is EventKind.SPEECH_STARTED or kind is EventKind.RETRACTED:
            self._send({"type": kind.value})
        elif kind is EventKind.REPLY_DELTA:
            self._send({"type": "reply", "text": event.text})
        elif kind is EventKind.BARGE_IN:
            self._send({"type": "barge_in", "heard": event.text})
        else:  # interim, candidate, final, discarded
            self._send({"type": kind.value, "text": event.text})
