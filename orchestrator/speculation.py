"""Work done while the user is still speaking, and what of it is thrown away.

`Prefiller` sends the user's words so far (INTERIM / CANDIDATE transcripts) to the LLM's
`Prefill`: the session's KV cache holds them before the turn's Generate, and the answer's
end-of-turn probability goes to the STT as a hint for the endpoint. At most one Prefill is in
flight per conversation; texts that arrive meanwhile are coalesced (only the latest is sent).

`EndOfTurnHints` routes the texts to the Prefiller and the scores to the STT stream of the turn.
`SpeculationStats` counts the LLM tokens and TTS audio of speculative replies that were discarded
(the user went on speaking) against all that was produced.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from orchestrator.listening import Listening, SttEvent, SttStream
from orchestrator.turn import Turn
from voice.llm.v1 import llm_pb2

log = logging.getLogger("orchestrator")

Hint = Callable[[str, float], None]  # (text scored, end-of-turn probability)


class Prefiller:
    def __init__(self, llm: object, session_id: str, timeout_s: float = 10.0) -> None:
        self._llm = llm
        self._session_id = session_id
        self._timeout_s = timeout_s
        self._pending: tuple[str, Hint] | None = None
        self._task: asyncio.Task[None] | None = None
        self.scores: dict[str, float] = {}  # text -> end-of-turn probability (this listening)
        self.calls = 0
        self._listening = 0  # bumped by reset(): a Prefill sent before it answers for an old turn

    def submit(self, text: str, hint: Hint) -> None:
        """Read `text` into the LLM session and hand its score to `hint`; a known score goes at once."""
        text = text.strip()
        if not text:
            return
        if text in self.scores:
            hint(text, self.scores[text])
            return
        self._pending = (text, hint)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain())

    def reset(self) -> None:
        """A new turn is listened for: earlier texts and scores no longer apply."""
        self._pending = None
        self.scores.clear()
        self._listening += 1

    async def _drain(self) -> None:
        while self._pending is not None:
            text, hint = self._pending
            self._pending, listening = None, self._listening
            self.calls += 1
            try:
                response = await self._llm.Prefill(  # type: ignore[attr-defined]
                    llm_pb2.PrefillRequest(session_id=self._session_id, text=text), timeout=self._timeout_s
                )
            except grpc.RpcError as error:  # best effort: the turn is only late without it
                log.warning("Prefill failed: %s", error.code())
                continue
            if listening != self._listening:
                continue  # the turn it scored is over: its score must not answer for the next turn's words
            if not response.superseded:
                self.scores[text] = response.end_of_turn_probability
                hint(text, response.end_of_turn_probability)

    async def close(self) -> None:
        self._pending = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task


class EndOfTurnHints:
    """While the user speaks: their words so far into the LLM (`Prefiller`), and the LLM's
    end-of-turn probability for them to the STT stream listening for the turn (the endpoint hint)."""

    def __init__(self, llm: object, session_id: str, listening: Listening) -> None:
        self.prefiller = Prefiller(llm, session_id)
        self._listening = listening

    def on_event(self, stream: SttStream, event: SttEvent, *, holds: bool) -> None:
        """INTERIM and CANDIDATE_FINAL texts are prefilled and scored; a candidate that starts a
        held reply is scored by that reply's Generate instead (same KV state, `for_turn`)."""
        text, listening, prefiller = event.text.strip(), self._listening, self.prefiller
        if not text:
            return
        if event.event == SttEvent.INTERIM or (event.event == SttEvent.CANDIDATE_FINAL and not holds):
            prefiller.submit(text, lambda scored, p: listening.hint(stream, scored, p))
        elif event.event == SttEvent.CANDIDATE_FINAL and text in prefiller.scores:
            listening.hint(stream, text, prefiller.scores[text])

    def for_turn(self, stream: SttStream, text: str) -> Callable[[float], None]:
        """Where a held reply's Generate sends the end-of-turn probability it read for `text`."""

        def hint(probability: float) -> None:
            self.prefiller.scores[text] = probability
            self._listening.hint(stream, text, probability)

        return hint

    def next_turn(self) -> None:
        self.prefiller.reset()

    async def close(self) -> None:
        await self.prefiller.close()


@dataclass
class SpeculationStats:
    """LLM tokens and TTS audio produced by replies, and the part discarded with speculative ones."""

    replies: int = 0
    discarded_replies: int = 0
    tokens: int = 0
    discarded_tokens: int = 0
    tts_ms: float = 0.0
    discarded_tts_ms: float = 0.0

    @staticmethod
    def _produced(turn: Turn) -> tuple[int, float]:
        summary = turn.spoken.summary
        tokens = summary.completion_tokens if summary is not None else len(turn.spoken.parts)
        rate = turn.spoken.sample_rate_hz
        audio_ms = turn.spoken.received_samples * 1000.0 / rate if rate else 0.0
        return tokens, audio_ms

    def kept(self, turn: Turn) -> None:
        tokens, audio_ms = self._produced(turn)
        self.replies += 1
        self.tokens += tokens
        self.tts_ms += audio_ms

    def discarded(self, turn: Turn) -> None:
        tokens, audio_ms = self._produced(turn)
        self.replies += 1
        self.discarded_replies += 1
        self.tokens += tokens
        self.discarded_tokens += tokens
        self.tts_ms += audio_ms
        self.discarded_tts_ms += audio_ms

    def as_dict(self) -> dict[str, float]:
        return {
            "replies": self.replies,
            "discarded_replies": self.discarded_replies,
            "tokens": self.tokens,
            "discarded_tokens": self.discarded_tokens,
            "discarded_tokens_pct": round(100.0 * self.discarded_tokens / self.tokens, 1) if self.tokens else 0.0,
            "tts_ms": round(self.tts_ms, 1),
            "discarded_tts_ms": round(self.discarded_tts_ms, 1),
        }
