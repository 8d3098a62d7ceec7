"""Request validation without gRPC: raises `RequestError` with a status name and a message
naming what was wrong and what is allowed. The servicer maps `code` to a grpc.StatusCode."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from llm_service.engine import ROLES, Message, Sampling
from llm_service.sessions import SESSION_ID

TEMPERATURE = (0.0, 2.0)
TOP_P = (0.0, 1.0)  # exclusive low, inclusive high
TOP_K = (0, 1000)
REPEAT_PENALTY = (1.0, 2.0)


class RequestError(ValueError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code  # "INVALID_ARGUMENT", "RESOURCE_EXHAUSTED", "NOT_FOUND", "FAILED_PRECONDITION"


def invalid(message: str) -> RequestError:
    return RequestError("INVALID_ARGUMENT", message)


@dataclass(frozen=True)
class Limits:
    default_max_tokens: int = 200
    max_tokens_limit: int = 512


class _ChatMessage(Protocol):
    role: str
    content: str


class _SamplingProto(Protocol):
    temperature: float
    top_p: float
    top_k: int
    repeat_penalty: float
    seed: int

    def HasField(self, name: str) -> bool: ...


def _check_id(field: str, value: str, required: bool) -> None:
    """Empty is allowed unless `required`; otherwise the session id alphabet and length."""
    if not value:
        if required:
            raise invalid(f"{field} is required (letters, digits, '-', '_', '.', ':' up to 128 characters)")
        return
    if not SESSION_ID.match(value):
        shown = value if len(value) <= 40 else value[:40] + "..."
        raise invalid(
            f"{field} {shown!r} is malformed: use letters, digits, '-', '_', '.', ':' "
            f"and at most 128 characters (got {len(value)})"
        )


def validate_session_id(session_id: str, required: bool = False) -> None:
    _check_id("session_id", session_id, required)


def validate_turn_id(turn_id: str, session_id: str = "", required: bool = False) -> None:
    """GenerateRequest.turn_id (needs a session) / DiscardTurnRequest.turn_id (required)."""
    _check_id("turn_id", turn_id, required)
    if turn_id and not required and not session_id:
        raise invalid("turn_id needs a session_id: turns are stored (and discarded) in a session")


def validate_messages(messages: Sequence[_ChatMessage], has_history: bool) -> list[Message]:
    if not messages and not has_history:
        raise invalid("messages is empty: send at least one message with role 'user' (or continue a session)")
    out: list[Message] = []
    for i, m in enumerate(messages):
        if m.role not in ROLES:
            raise invalid(f"messages[{i}].role {m.role!r} is unknown; allowed roles: {', '.join(ROLES)}")
        if not m.content.strip():
            raise invalid(f"messages[{i}].content is empty; every message needs some text")
        if m.role == "system" and i != 0:
            raise invalid(f"messages[{i}] has role 'system'; a system message is only allowed as the first message")
        out.append(Message(m.role, m.content))
    return out


def validate_history(history: Sequence[_ChatMessage], session_id: str) -> list[Message] | None:
    """GenerateRequest.history: None when absent; user/assistant messages (a reply may be empty)."""
    if not history:
        return None
    if not session_id:
        raise invalid("history needs a session_id (without one, send the whole conversation in messages)")
    out: list[Message] = []
    for i, m in enumerate(history):
        if m.role not in ("user", "assistant"):
            raise invalid(f"history[{i}].role {m.role!r} is not allowed; history holds 'user' and 'assistant' messages")
        if m.role == "user" and not m.content.strip():
            raise invalid(f"history[{i}] is an empty user message; every user message needs some text")
        out.append(Message(m.role, m.content))
    return out


PREFILL_TEXT_MAX_CHARS = 4000


def validate_prefill_text(text: str) -> str:
    """PrefillRequest.text: the user's words so far, not blank, at most PREFILL_TEXT_MAX_CHARS."""
    if not text.strip():
        raise invalid("text is empty; send the user's words so far (an INTERIM or CANDIDATE transcript)")
    if len(text) > PREFILL_TEXT_MAX_CHARS:
        raise invalid(f"text is {len(text)} characters; at most {PREFILL_TEXT_MAX_CHARS} are allowed")
    return text


def _check_range(name: str, value: float, low: float, high: float, low_open: bool = False) -> None:
    ok = math.isfinite(value) and (value > low if low_open else value >= low) and value <= high
    if not ok:
        bracket = "(" if low_open else "["
        raise invalid(f"sampling.{name} {value:g} is out of range; allowed {bracket}{low:g}, {high:g}]")


def validate_sampling(sampling: _SamplingProto | None, defaults: Sampling) -> Sampling:
    if sampling is None:
        return defaults
    temperature, top_p, top_k, repeat_penalty, seed = (
        defaults.temperature,
        defaults.top_p,
        defaults.top_k,
        defaults.repeat_penalty,
        defaults.seed,
    )
    if sampling.HasField("temperature"):
        temperature = sampling.temperature
        _check_range("temperature", temperature, *TEMPERATURE)
    if sampling.HasField("top_p"):
        top_p = sampling.top_p
        _check_range("top_p", top_p, *TOP_P, low_open=True)
    if sampling.HasField("top_k"):
        top_k = sampling.top_k
        _check_range("top_k", top_k, *TOP_K)
    if sampling.HasField("repeat_penalty"):
        repeat_penalty = sampling.repeat_penalty
        _check_range("repeat_penalty", repeat_penalty, *REPEAT_PENALTY)
    if sampling.HasField("seed"):
        seed = sampling.seed
    return Sampling(float(temperature), float(top_p), int(top_k), float(repeat_penalty), seed)


def validate_max_tokens(max_tokens: int, limits: Limits) -> int:
    if max_tokens == 0:
        return min(limits.default_max_tokens, limits.max_tokens_limit)
    if max_tokens > limits.max_tokens_limit:
        raise invalid(
            f"max_tokens {max_tokens} is over the server limit; allowed 1 to {limits.max_tokens_limit} "
            f"(0 = default {limits.default_max_tokens})"
        )
    return max_tokens
