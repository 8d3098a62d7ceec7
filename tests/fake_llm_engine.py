"""FakeLanguageEngine: a deterministic stand-in for fast tests of sessions, queueing and errors.

It "tokenizes" by whitespace (plus 4 tokens per message), replies with a fixed sentence that
echoes the last user message, and can be held between tokens with `gate` to test
cancellation and queue limits without sleeps. `prefill` caches the words of the prompt up to
the last message's words and scores the end of the turn 0.9 when they end in . ? ! (else 0.1).

`serve_fake_llm` runs the real LanguageModelServicer on it (in-process gRPC server on port 0,
on its own event-loop thread); the `fake_llm` fixture in tests/conftest.py uses it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import grpc

from llm_service.engine import Backend, FinishReason, GenerationResult, Message, PrefillResult, Sampling
from llm_service.servicer import LanguageModelServicer, ServiceConfig
from service_runtime.admission import Admission
from service_runtime.engine_slot import EngineSlot
from service_runtime.worker import ModelWorker
from voice.llm.v1 import llm_pb2_grpc

WAIT_S = 10.0


class FakeLanguageEngine:
    backend = Backend.LLAMA_CPP
    model_name = "fake"
    model_path = "<fake>"

    def __init__(self, n_ctx: int = 4096, reply: str | None = None) -> None:
        self.n_ctx = n_ctx
        self.reply = reply
        # Cleared: generation blocks before each token until set (tests release it).
        self.gate = threading.Event()
        self.gate.set()
        self.started = threading.Event()  # set when a generation starts producing tokens
        self.calls: list[list[Message]] = []
        self.prefills: list[list[Message]] = []
        self.forgotten: list[str] = []
        self.dropped_replies: list[str] = []
        self.trimmed: list[tuple[str, int]] = []  # (cache key, kept prefix length) per discard_after
        self._cache: dict[str | None, list[str]] = {}

    @staticmethod
    def _words(messages: Sequence[Message]) -> list[str]:
        words: list[str] = []
        for m in messages:
            words += [f"<{m.role}>", *m.content.split(), "</>", "\n"]
        return words

    def count_tokens(self, messages: Sequence[Message]) -> int:
        return len(self._words(messages))

    def generate(
        self,
        messages: Sequence[Message],
        max_tokens: int,
        sampling: Sampling,
        cache_key: str | None,
        on_delta: Callable[[str], None],
        should_stop: Callable[[], bool],
    ) -> GenerationResult:
        self.calls.append(list(messages))
        prompt = self._words(messages)
        previous = self._cache.get(cache_key, [])
        cached = 0
        for a, b in zip(previous, prompt, strict=False):
            if a != b:
                break
            cached += 1
        last_user = next((m.content for m in reversed(messages) if m.role == "user"), "")
        reply = self.reply if self.reply is not None else f"You said: {last_user}"
        words = reply.split(" ")
        out: list[str] = []
        first_at: float | None = None
        finish = FinishReason.STOP
        self.started.set()
        for i, word in enumerate(words):
            self.gate.wait()
            if should_stop():
                finish = FinishReason.CANCELLED
                break
            if len(out) >= max_tokens:
                finish = FinishReason.LENGTH
                break
            piece = word if i == 0 else " " + word
            first_at = first_at or time.perf_counter()
            out.append(piece)
            on_delta(piece)
        self._cache[cache_key] = prompt + "".join(out).split()
        return GenerationResult(finish, len(prompt), cached, len(out), "".join(out), first_at, time.perf_counter())

    def prefill(self, messages: Sequence[Message], cache_key: str | None) -> PrefillResult:
        self.gate.wait()
        self.prefills.append(list(messages))
        prompt = self._words(messages)[:-2]  # the last message without its end marker
        previous = self._cache.get(cache_key, [])
        cached = 0
        for a, b in zip(previous, prompt, strict=False):
            if a != b:
                break
            cached += 1
        self._cache[cache_key] = prompt
        ends = messages[-1].content.rstrip().endswith((".", "?", "!"))
        return PrefillResult(len(prompt), cached, 0.9 if ends else 0.1)

    def drop_reply(self, cache_key: str) -> None:
        self.dropped_replies.append(cache_key)

    def discard_after(self, cache_key: str, kept: Sequence[Message]) -> None:
        previous = self._cache.get(cache_key, [])
        kept_words = self._words(kept)
        n = 0
        for a, b in zip(previous, kept_words, strict=False):
            if a != b:
                break
            n += 1
        self._cache[cache_key] = previous[:n]
        self.trimmed.append((cache_key, n))

    def forget(self, cache_key: str) -> None:
        self.forgotten.append(cache_key)
        self._cache.pop(cache_key, None)


@dataclass
class FakeLlm:
    """The LLM service's servicer on a FakeLanguageEngine, and a client stub for it."""

    stub: llm_pb2_grpc.LanguageModelStub
    engine: FakeLanguageEngine
    servicer: LanguageModelServicer

    @property
    def worker(self) -> ModelWorker:
        """The model thread's queue: `worker.wait_until(...)` waits for its state, without polling."""
        return self.servicer.worker


@contextmanager
def serve_fake_llm(config: ServiceConfig, n_ctx: int = 200) -> Iterator[FakeLlm]:
    """An in-process gRPC server (port 0, admission interceptor) for the servicer with `config`."""
    engine = FakeLanguageEngine(n_ctx=n_ctx)
    slot: EngineSlot[FakeLanguageEngine] = EngineSlot("llm-service")
    slot.set(engine)
    admission = Admission()
    servicer = LanguageModelServicer(slot, config, admission)  # type: ignore[arg-type]
    loop = asyncio.new_event_loop()
    ready, stop, port = threading.Event(), asyncio.Event(), list[int]()

    async def run() -> None:
        server = grpc.aio.server(interceptors=[admission])
        llm_pb2_grpc.add_LanguageModelServicer_to_server(servicer, server)
        port.append(server.add_insecure_port("127.0.0.1:0"))
        await server.start()
        ready.set()
        await stop.wait()
        await server.stop(0)

    thread = threading.Thread(target=loop.run_until_complete, args=(run(),), daemon=True)
    thread.start()
    assert ready.wait(WAIT_S), "the fake LLM server did not start"
    channel = grpc.insecure_channel(f"127.0.0.1:{port[0]}")
    try:
        yield FakeLlm(llm_pb2_grpc.LanguageModelStub(channel), engine, servicer)
    finally:
        engine.gate.set()
        channel.close()
        loop.call_soon_threadsafe(stop.set)
        thread.join(WAIT_S)
        servicer.worker.close()
