"""The language-engine interface (no gRPC, no backend here): messages, sampling, results, the protocol.

A leaf module: the backend (`llama_engine.py`) and the servicer import it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

ROLES = ("system", "user", "assistant")


class Backend(str, Enum):
    # llama.cpp through llama-cpp-python: CPU on Linux, Metal on Apple Silicon (same backend).
    LLAMA_CPP = "llama-cpp"


class FinishReason(str, Enum):
    STOP = "stop"
    LENGTH = "length"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class Message:
    role: str
    content: str
    # Session bookkeeping only (GenerateRequest.turn_id, "" = none): never shown to the model.
    turn_id: str = field(default="", compare=False, repr=False)


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.7
    top_p: float = 0.9
    top_k: int = 40
    repeat_penalty: float = 1.1
    seed: int | None = None


class EngineCheckError(RuntimeError):
    """The start-up warm-up produced no usable text."""


@dataclass
class GenerationResult:
    finish_reason: FinishReason
    prompt_tokens: int
    cached_prompt_tokens: int
    completion_tokens: int
    text: str
    # perf_counter() timestamps: first token produced, generation ended.
    first_token_at: float | None = None
    ended_at: float = 0.0


@dataclass
class PrefillResult:
    prompt_tokens: int
    cached_prompt_tokens: int
    end_of_turn_probability: float


class LanguageEngine(Protocol):
    backend: Backend
    model_name: str
    model_path: str
    n_ctx: int

    def count_tokens(self, messages: Sequence[Message]) -> int: ...

    def generate(
        self,
        messages: Sequence[Message],
        max_tokens: int,
        sampling: Sampling,
        cache_key: str | None,
        on_delta: Callable[[str], None],
        should_stop: Callable[[], bool],
    ) -> GenerationResult: ...

    def prefill(self, messages: Sequence[Message], cache_key: str | None) -> PrefillResult: ...

    def drop_reply(self, cache_key: str) -> None: ...

    def discard_after(self, cache_key: str, kept: Sequence[Message]) -> None: ...

    def forget(self, cache_key: str) -> None: ...


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the common start of two token sequences."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
