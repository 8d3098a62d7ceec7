"""Which conversation's tokens the llama context holds, and the saved KV states of the others.

Worker thread only, except `drop_reply` / `discard_after` / `forget`: those are recorded under a
lock from any thread and applied by `apply_pending` before the next model call.

* The context holds the tokens of one conversation (the "live" cache key); `Llama.generate`
  reuses the longest common token prefix with the new prompt.
* When another conversation needs the model, the live one's KV cells are saved
  (`llama_state_seq_get_data`) and the other's saved state, or the system-prompt prefix, restored.
"""

from __future__ import annotations

import ctypes
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from llm_service.engine import Message, common_prefix

log = logging.getLogger("llm-service")


@dataclass
class _SavedState:
    tokens: list[int]
    data: bytes
    valid: int  # tokens of `tokens` whose KV may be reused (trimmed by drop_reply)


class KvCache:
    def __init__(
        self, llm: Any, llama_cpp: Any, max_saved: int, tokenize: Callable[[Sequence[Message]], list[int]]
    ) -> None:
        self._llm = llm
        self._lc = llama_cpp
        self._tokenize = tokenize
        self._lock = threading.Lock()  # guards the pending invalidations below
        self._pending_forget: set[str] = set()
        self._pending_drop: set[str] = set()
        self._pending_trim: dict[str, list[Message]] = {}
        self._live_key: str | None = None
        self._last_prompt_len: dict[str, int] = {}
        self._saved: OrderedDict[str, _SavedState] = OrderedDict()
        self._max_saved = max_saved
        self.system_state: _SavedState | None = None
        self.state_save_ms: list[float] = []
        self.state_load_ms: list[float] = []

    def keep_system_prefix(self, prefix: list[int]) -> None:
        """Evaluate the default system prompt's tokens once and keep their state (turn 1 of any session)."""
        self._llm.reset()
        self._llm.eval(prefix)
        self.system_state = self.save_live()

    def reset(self) -> None:
        """An empty context that belongs to no conversation (measurements without cache)."""
        self._llm.reset()
        self._live_key = None

    def note_prompt(self, cache_key: str | None, n_tokens: int) -> None:
        """The prompt of `cache_key`'s reply being generated ends after `n_tokens` (for drop_reply)."""
        if cache_key is not None:
            self._last_prompt_len[cache_key] = n_tokens

    def save_live(self) -> _SavedState:
        started = time.perf_counter()
        ctx = self._llm._ctx.ctx
        size = self._lc.llama_state_seq_get_size(ctx, 0)
        buf = (ctypes.c_uint8 * size)()
        written = self._lc.llama_state_seq_get_data(ctx, buf, size, 0)
        n = self._llm.n_tokens
        state = _SavedState(tokens=list(self._llm.input_ids[:n]), data=bytes(buf)[:written], valid=n)
        self.state_save_ms.append((time.perf_counter() - started) * 1000)
        return state

    def load(self, state: _SavedState) -> None:
        started = time.perf_counter()
        ctx = self._llm._ctx.ctx
        self._lc.llama_memory_clear(self._lc.llama_get_memory(ctx), True)
        buf = (ctypes.c_uint8 * len(state.data)).from_buffer_copy(state.data)
        if self._lc.llama_state_seq_set_data(ctx, buf, len(state.data), 0) != len(state.data):
            self._llm.reset()
            self._lc.llama_memory_clear(self._lc.llama_get_memory(ctx), True)
            log.warning("could not restore a saved KV state; re-reading the prompt")
            return
        n = state.valid
        self._llm.input_ids[:n] = state.tokens[:n]
        self._llm.n_tokens = n
        self._llm._ctx.kv_cache_seq_rm(-1, n, -1)
        self._llm._requires_eval = True
        self.state_load_ms.append((time.perf_counter() - started) * 1000)

    def live_tokens(self) -> list[int]:
        return list(self._llm.input_ids[: self._llm.n_tokens])

    def apply_pending(self) -> None:
        with self._lock:
            forget, drop, trim = self._pending_forget, self._pending_drop, self._pending_trim
            self._pending_forget, self._pending_drop, self._pending_trim = set(), set(), {}
        for key in forget:
            self._saved.pop(key, None)
            self._last_prompt_len.pop(key, None)
            if self._live_key == key:
                self._live_key = None
        for key in drop:
            keep = self._last_prompt_len.get(key)
            if keep is None:
                continue
            if self._live_key == key and self._llm.n_tokens > keep:
                self._llm.n_tokens = keep
                self._llm._ctx.kv_cache_seq_rm(-1, keep, -1)
                self._llm._requires_eval = True
            elif key in self._saved:
                self._saved[key].valid = min(self._saved[key].valid, keep)
        for key, kept in trim.items():
            # Keep the KV of the tokens the kept history renders to (a discarded turn's are dropped).
            self._last_prompt_len.pop(key, None)
            kept_tokens = self._tokenize(kept)
            if self._live_key == key:
                n = common_prefix(self.live_tokens(), kept_tokens)
                if self._llm.n_tokens > n:
                    self._llm.n_tokens = n
                    self._llm._ctx.kv_cache_seq_rm(-1, n, -1)
                    self._llm._requires_eval = True
            elif key in self._saved:
                saved = self._saved[key]
                saved.valid = min(saved.valid, common_prefix(saved.tokens[: saved.valid], kept_tokens))

    def switch_to(self, cache_key: str | None, tokens: list[int]) -> None:
        """Make the context hold the state sharing the longest prefix with `tokens`."""
        if self._live_key == cache_key and cache_key is not None:
            return
        if self._live_key is not None and self._llm.n_tokens > 0:
            self._saved[self._live_key] = self.save_live()
            self._saved.move_to_end(self._live_key)
            while len(self._saved) > self._max_saved:
                self._saved.popitem(last=False)
        best_len = common_prefix(self.live_tokens(), tokens)
        best: _SavedState | None = None
        candidates = [self._saved.get(cache_key) if cache_key else None, self.system_state]
        for state in candidates:
            if state is None:
                continue
            length = common_prefix(state.tokens[: state.valid], tokens)
            if length > best_len:
                best, best_len = state, length
        if best is not None:
            self.load(best)
        if cache_key is not None:
            self._saved.pop(cache_key, None)  # now live; saved again when someone else needs the model
        self._live_key = cache_key

    def drop_reply(self, cache_key: str) -> None:
        """The session's last reply was not (fully) heard: do not keep its tokens' KV."""
        with self._lock:
            self._pending_drop.add(cache_key)

    def discard_after(self, cache_key: str, kept: Sequence[Message]) -> None:
        """The session's history is now `kept` (a turn was discarded): drop the KV of later tokens."""
        with self._lock:
            self._pending_trim[cache_key] = list(kept)

    def forget(self, cache_key: str) -> None:
        with self._lock:
            self._pending_forget.add(cache_key)
            self._pending_drop.discard(cache_key)
            self._pending_trim.pop(cache_key, None)
