"""The llama-cpp-python backend (no gRPC here) of the `LanguageEngine` interface in `engine.py`.

One `LlamaCppEngine` owns one `llama_cpp.Llama`. It is NOT thread-safe for generation: the
service drives it from a single worker thread (`service_runtime.worker.ModelWorker`). Prompt caching
(`kv_cache.py`: which conversation the context holds, saved KV states of the others):

* `Llama.generate` reuses the longest common token prefix with the new prompt, so turn N of
  a session only reads the tokens added since turn N-1.
* When another session (cache key) needs the model, the live session's KV cells are saved
  (~1 ms and ~12 KB/token for Qwen 0.5B) and the other session's saved state (or the cached
  system-prompt prefix) is restored.
* The default system prompt is evaluated once at load time and its KV state kept, so turn 1
  of a new session only reads the user's tokens.
* `drop_reply(key)` / `discard_after(key, kept)` / `forget(key)` are lazy (recorded under a lock, applied by the worker
  before its next generation), so they can be called from any thread.
"""

from __future__ import annotations

import codecs
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llm_service import turn_end
from llm_service.engine import (
    Backend,
    EngineCheckError,
    FinishReason,
    GenerationResult,
    Message,
    PrefillResult,
    Sampling,
    common_prefix,
)
from llm_service.kv_cache import KvCache
from llm_service.thread_burst import BurstPolicy, ThreadBurst

log = logging.getLogger("llm-service")


class TokenTextDecoder:
    """Token bytes -> text deltas. A character split across tokens (UTF-8 multi-byte, e.g. an
    emoji made of byte-fallback tokens) is held back until its last byte arrives. Bytes that never
    form a character (a tail cut by max_tokens, an invalid sequence) are dropped, never turned into
    U+FFFD: the text goes to TTS and to the session history."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="ignore")

    def feed(self, data: bytes) -> str:
        return str(self._decoder.decode(data))

    def flush(self) -> str:
        """End of the reply: an incomplete trailing character is dropped (returns "")."""
        return str(self._decoder.decode(b"", final=True))


@dataclass
class EngineConfig:
    model_name: str
    model_path: Path
    n_ctx: int = 32768
    threads: int = 1
    # Threads for reading prompts (batches); 0 = same as `threads`.
    threads_batch: int = 0
    n_batch: int = 512
    system_prompt: str = ""
    max_saved_states: int = 32
    burst: BurstPolicy = field(default_factory=BurstPolicy)
    extra: dict[str, Any] = field(default_factory=dict)


def read_context_length(path: Path) -> int:
    """The model's trained context (n_ctx_train) from the GGUF metadata, 0 if unknown."""
    from llama_cpp import Llama

    vocab = Llama(str(path), vocab_only=True, verbose=False)
    try:
        meta = vocab.metadata
        arch = meta.get("general.architecture", "")
        return int(meta.get(f"{arch}.context_length", 0))
    finally:
        vocab.close()


class LlamaCppEngine:
    backend = Backend.LLAMA_CPP

    def __init__(self, config: EngineConfig) -> None:
        import llama_cpp
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self._lc = llama_cpp
        self.model_name = config.model_name
        self.model_path = str(config.model_path)
        self.system_prompt = config.system_prompt
        trained = read_context_length(config.model_path)
        n_ctx = config.n_ctx
        if trained and n_ctx > trained:
            log.info("n_ctx %d clamped to the model's trained context n_ctx_train=%d", n_ctx, trained)
            n_ctx = trained
        self.n_ctx_requested = config.n_ctx
        self.n_ctx_train = trained
        self.threads = config.threads
        self.threads_batch = config.threads_batch or config.threads
        started = time.perf_counter()
        self._llm = Llama(
            str(config.model_path),
            n_ctx=n_ctx,
            n_batch=min(config.n_batch, n_ctx),
            n_threads=config.threads,
            n_threads_batch=self.threads_batch,
            verbose=False,
        )
        self.load_s = time.perf_counter() - started
        self.n_ctx = self._llm.n_ctx()
        template = self._llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise RuntimeError(f"{config.model_path} has no tokenizer.chat_template in its GGUF metadata")
        model = self._llm._model
        eos, bos = self._llm.token_eos(), self._llm.token_bos()
        self._formatter = Jinja2ChatFormatter(
            template=template,
            eos_token=model.token_get_text(eos) if eos != -1 else "",
            bos_token=model.token_get_text(bos) if bos != -1 else "",
            add_generation_prompt=True,
        )
        self._vocab = model.vocab
        self.kv = KvCache(self._llm, llama_cpp, config.max_saved_states, self.tokenize_messages)
        n_vocab = self._llm.n_vocab()
        self._n_vocab = n_vocab
        self._ending_ids = turn_end.ending_token_ids(
            (i, self._llm.detokenize([i]).decode("utf-8", "ignore")) for i in range(n_vocab)
        )
        # (cache key, prefilled tokens, end-of-turn probability) of the last prefill, for repeats.
        self._last_score: tuple[str | None, tuple[int, ...], float] | None = None
        self.burst = ThreadBurst(config.burst, self.threads, self.threads_batch)

    # ---- prompt building -------------------------------------------------------------
    def render(self, messages: Sequence[Message]) -> str:
        chat: list[Any] = [{"role": m.role, "content": m.content} for m in messages]
        response = self._formatter(messages=chat)
        return str(response.prompt)

    def tokenize_messages(self, messages: Sequence[Message]) -> list[int]:
        prompt = self.render(messages)
        # The GGUF templates write their own BOS/special tokens: do not add another BOS.
        return list(self._llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True))

    def count_tokens(self, messages: Sequence[Message]) -> int:
        return len(self.tokenize_messages(messages))

    def warm_up(self) -> float:
        """Evaluate the system-prompt prefix once, keep its KV state, run one short completion."""
        started = time.perf_counter()
        if self.system_prompt:
            prefix = self._system_prefix_tokens()
            if prefix:
                self.kv.keep_system_prefix(prefix)
        result = self.generate(
            [Message("system", self.system_prompt), Message("user", "Hello!")]
            if self.system_prompt
            else [Message("user", "Hello!")],
            max_tokens=4,
            sampling=Sampling(temperature=0.0),
            cache_key=None,
            on_delta=lambda _text: None,
            should_stop=lambda: False,
        )
        log.info("warm-up reply %r", result.text)
        if result.completion_tokens == 0 or not any(ch.isalnum() for ch in result.text):
            # A llama.cpp build whose CPU kernels compute nonsense answers with nothing or noise.
            raise EngineCheckError(
                f"warm-up generation for 'Hello!' returned {result.text!r} ({result.completion_tokens} tokens): "
                "the model file or the llama.cpp build is broken on this CPU"
            )
        return time.perf_counter() - started

    def _system_prefix_tokens(self) -> list[int]:
        """Tokens the rendered prompt starts with for the default system prompt (any user turn)."""
        a = self.tokenize_messages([Message("system", self.system_prompt), Message("user", "a")])
        b = self.tokenize_messages([Message("system", self.system_prompt), Message("user", "b")])
        n = common_prefix(a, b)
        return a[:n]

    # ---- threads (worker thread only) ---------------------------------------------------------
    def _use_threads(self, burst: bool) -> None:
        n, n_batch = (self.burst.policy.threads,) * 2 if burst else self.burst.base
        self._lc.llama_set_n_threads(self._llm._ctx.ctx, n, n_batch)

    # ---- generation (worker thread only) --------------------------------------------------
    def generate(
        self,
        messages: Sequence[Message],
        max_tokens: int,
        sampling: Sampling,
        cache_key: str | None,
        on_delta: Callable[[str], None],
        should_stop: Callable[[], bool],
    ) -> GenerationResult:
        self.kv.apply_pending()
        tokens = self.tokenize_messages(messages)
        self.kv.switch_to(cache_key, tokens)
        # Llama.generate reuses this prefix and always re-reads at least the last token.
        cached = min(common_prefix(self.kv.live_tokens(), tokens), len(tokens) - 1)
        self.kv.note_prompt(cache_key, len(tokens))
        self._llm.set_seed(sampling.seed if sampling.seed is not None else random.randrange(2**31))
        decoder = TokenTextDecoder()
        parts: list[str] = []
        completion = 0
        finish = FinishReason.LENGTH
        first_at: float | None = None
        room = self.n_ctx - len(tokens)
        limit = max(0, min(max_tokens, room))
        if limit == 0:
            return GenerationResult(finish, len(tokens), cached, 0, "", None, time.perf_counter())
        if should_stop():
            return GenerationResult(FinishReason.CANCELLED, len(tokens), 0, 0, "", None, time.perf_counter())
        bursting = self.burst.may_burst(cache_key)  # the prompt's tail and the first phrase on the idle core too
        if bursting:
            self._use_threads(True)
        stream = self._llm.generate(
            tokens,
            top_k=sampling.top_k,
            top_p=sampling.top_p,
            min_p=0.05,
            temp=sampling.temperature,
            repeat_penalty=sampling.repeat_penalty,
            reset=True,
        )
        step_at = 0.0
        try:
            for token in stream:
                now = time.perf_counter()
                if first_at is None:
                    first_at = now
                elif bursting and (
                    self.burst.step_stalled(now - step_at) or completion + 1 >= self.burst.policy.tokens
                ):
                    bursting = False
                    self._use_threads(False)
                step_at = now
                if self._lc.llama_vocab_is_eog(self._vocab, token):
                    finish = FinishReason.STOP
                    break
                completion += 1
                text = decoder.feed(self._llm.detokenize([token]))
                if text:
                    parts.append(text)
                    on_delta(text)
                if should_stop():
                    finish = FinishReason.CANCELLED
                    break
                if completion >= limit:
                    finish = FinishReason.LENGTH
                    break
        finally:
            stream.close()
            if bursting:
                self._use_threads(False)
        tail = decoder.flush()  # "" when the reply ends inside a character (e.g. cut by max_tokens)
        if tail and finish != FinishReason.CANCELLED:
            parts.append(tail)
            on_delta(tail)
        return GenerationResult(finish, len(tokens), cached, completion, "".join(parts), first_at, time.perf_counter())

    # ---- prefill while the user speaks (worker thread only) -----------------------------------
    def prefill(self, messages: Sequence[Message], cache_key: str | None) -> PrefillResult:
        """Read the prompt up to the end of the last message's words into the KV cache (trailing
        . ? ! scored first, see `turn_end`) and score the end of the turn from the next-token logits:
        max(P(message or sentence ends | words), P(message ends | words + their final mark)).
        The turn's Generate then reuses this prefix and reads only the rest of the prompt."""
        self.kv.apply_pending()
        *head, last = messages
        words = turn_end.scoring_text(last.content)
        tail = last.content.rstrip()[len(words) :]  # the trailing . ? ! left out of the score
        rendered = self.tokenize_messages([*head, Message(last.role, last.content.rstrip())])
        boundary = turn_end.words_boundary(
            self.tokenize_messages([*head, Message(last.role, words + " and")]),
            self.tokenize_messages([*head, Message(last.role, words + " or")]),
        )
        tokens = rendered[:boundary]
        end_message = self.tokenize_messages([*head, Message(last.role, words)])[boundary : boundary + 1]
        marks: list[int] = []
        if tail:  # the mark's tokens: up to where the message ends in the full rendering
            with_mark = turn_end.words_boundary(
                self.tokenize_messages([*head, Message(last.role, last.content.rstrip() + " and")]),
                self.tokenize_messages([*head, Message(last.role, last.content.rstrip() + " or")]),
            )
            marks = rendered[boundary:with_mark]
        everything = tokens + marks
        self.kv.switch_to(cache_key, everything)
        if (
            self._last_score is not None
            and self._last_score[:2] == (cache_key, tuple(everything))
            and self._llm.n_tokens == len(everything)
        ):
            return PrefillResult(len(everything), len(everything), self._last_score[2])
        common = common_prefix(self.kv.live_tokens(), tokens)
        keep = min(common, len(tokens) - 1)
        self._llm.n_tokens = keep
        bursting = self.burst.may_burst(cache_key)
        if bursting:
            self._use_threads(True)
        try:
            self._llm.eval(tokens[keep:])  # drops the KV after `keep` first (revised words)
            probability = turn_end.end_probability(self._logits(), sorted({*self._ending_ids, *end_message}))
            if marks:  # as transcribed ("Tell me a joke." ends the message far more often than "Tell me a joke")
                self._llm.eval(marks)
                probability = max(probability, turn_end.end_probability(self._logits(), end_message))
        finally:
            if bursting:
                self._use_threads(False)
        self._last_score = (cache_key, tuple(everything), probability)
        return PrefillResult(len(everything), keep, probability)

    def _logits(self) -> Any:
        import numpy as np

        return np.ctypeslib.as_array(self._lc.llama_get_logits_ith(self._llm._ctx.ctx, -1), shape=(self._n_vocab,))

    # ---- invalidation (any thread): recorded, applied before the next model call -----------------
    def drop_reply(self, cache_key: str) -> None:
        self.kv.drop_reply(cache_key)

    def discard_after(self, cache_key: str, kept: Sequence[Message]) -> None:
        self.kv.discard_after(cache_key, kept)

    def forget(self, cache_key: str) -> None:
        self.kv.forget(cache_key)

    def close(self) -> None:
        self._llm.close()
