"""Spoken turns through the orchestrator: streaming vs sync (alternating), and concurrent conversations.

Uses the orchestrator's public API only:
    Conversation(ServiceAddresses(...), mode="streaming"|"sync", session_id=...)
    await conv.run_file(pcm, sample_rate_hz, pace=True, speech_end_ms=...) -> list[TurnResult]
    await conv.close()
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import Callable
from typing import Any

from bench import latency
from bench.fixtures import Utterance
from bench.services import LLM_BURST, LLM_MODEL
from bench.stats import corpus_wer, ratio, summarize, turn_counts

Progress = Callable[[str], None]
MODES = ("streaming", "sync")
# Optional third mode (--compare-hints): streaming with the STT's own endpointing (no LLM
# end-of-turn hints, no prefill), i.e. the pipeline before issue 15, in the same run.
NO_HINTS = "streaming-nohints"
# Optional mode (--compare-burst): streaming on an llm-service that decodes the start of a reply
# on the idle second core too (llm_service/thread_burst.py; off by default).
BURST = "streaming-burst"
# Optional mode (--compare-candidate MS): streaming with the reply started after a shorter pause
# (CANDIDATE_FINAL after MS of silence instead of the orchestrator's HINTED_CANDIDATE_MS, 32 ms).
EARLY = "streaming-early"
EARLY_CANDIDATE_MS = 32
# Optional mode (--compare-llm-model NAME): streaming on a second llm-service running another model
# (e.g. the re-quantized qwen2.5-0.5b-q4_0).
OTHER_MODEL = "streaming-model"
# Modes served by a second llm-service (bench.services key), and every mode that streams.
LLM_OF_MODE = {BURST: LLM_BURST, OTHER_MODEL: LLM_MODEL}
STREAMING_VARIANTS = (NO_HINTS, BURST, EARLY, OTHER_MODEL)
TURN_TIMEOUT_S = 180.0  # a stuck turn is reported as an error instead of hanging the bench
TURN_FIELDS = (
    "dead_air_ms",
    "stt_final_ms",
    "llm_ttft_ms",
    "first_sentence_ms",
    "tts_ttfa_ms",
    "playback_start_ms",
    "total_ms",
)


# Simulated playback of the agent's reply in real time makes each turn last as long as the reply
# (a recipe: 30-40 s) without changing dead air; off by default to keep the bench short.
REALTIME_PLAYBACK = False
# A fixed seed makes a run's replies repeatable at the server's temperature: every mode answers the
# same words with the same reply, so how soon the first phrase is complete (which depends on its
# wording) no longer differs between modes or runs. None: a random seed per reply.
REPLY_SEED: int | None = 1


def open_conversation(addresses: dict[str, str], mode: str, session_id: str) -> Any:
    from orchestrator.audio import MemorySink
    from orchestrator.config import ServiceAddresses
    from orchestrator.conversation import Conversation
    from service_runtime.tls import ClientTls
    from voice.llm.v1 import llm_pb2

    llm = addresses[LLM_OF_MODE.get(mode, "llm")]
    return Conversation(
        ServiceAddresses(stt=addresses["stt"], llm=llm, tts=addresses["tts"], tls=ClientTls.from_env()),
        mode="streaming" if mode in STREAMING_VARIANTS else mode,  # type: ignore[arg-type]
        candidate_silence_ms=EARLY_CANDIDATE_MS if mode == EARLY else 0,
        session_id=session_id,
        sink=MemorySink(realtime=REALTIME_PLAYBACK),
        end_of_turn_hints=mode != NO_HINTS,
        sampling=None if REPLY_SEED is None else llm_pb2.SamplingOptions(seed=REPLY_SEED),
    )


def _as_dict(result: Any) -> dict[str, Any]:
    as_dict = getattr(result, "as_dict", None)
    if callable(as_dict):  # TurnResult.as_dict(): everything but the audio
        return dict(as_dict())
    if dataclasses.is_dataclass(result) and not isinstance(result, type):
        return dataclasses.asdict(result)
    if isinstance(result, dict):
        return dict(result)
    return {k: v for k, v in vars(result).items() if not k.startswith("_")}


def _num(value: Any) -> float | None:
    if value is None:
        return None
    try:
        return round(float(value), 1)
    except (TypeError, ValueError):
        return None


async def run_turn(conv: Any, utt: Utterance, mode: str, label: str, progress: Progress) -> dict[str, Any]:
    """One fixture spoken at real-time pace into a conversation; a row describing what the user experienced."""
    t0 = time.perf_counter()
    row: dict[str, Any] = {"label": label, "mode": mode, "fixture": utt.name, "reference": utt.text}
    before = latency.speculation_snapshot(conv)
    try:
        results = await asyncio.wait_for(
            conv.run_file(utt.pcm, utt.sample_rate_hz, pace=True, speech_end_ms=utt.speech_end_ms), TURN_TIMEOUT_S
        )
    except Exception as error:  # a failed turn is reported, the bench goes on
        row.update({"error": f"{type(error).__name__}: {error}", "turns": 0, "wall_ms": _ms_since(t0)})
        progress(f"{label:<14} {mode:<9} {utt.name:<20} ERROR {row['error']}")
        return row
    # In the order the user spoke them: results come in the order turns finish, and a turn the
    # user barged into finishes after the one that interrupted it.
    turns = sorted((_as_dict(r) for r in results), key=lambda t: int(t.get("utterance_index") or 0))
    row["turns"] = len(turns)
    row["wall_ms"] = _ms_since(t0)
    row["transcript"] = " ".join(str(t.get("transcript") or "") for t in turns).strip()
    row["reply"] = " ".join(str(t.get("reply") or "") for t in turns).strip()
    # The turn that answers the end of the user's speech is the last one (earlier ones are premature).
    answered = [t for t in turns if t.get("dead_air_ms") is not None]
    last = answered[-1] if answered else (turns[-1] if turns else {})
    for name in TURN_FIELDS:
        row[name] = _num(last.get(name))
    row["preemptive_used"] = bool(last.get("preemptive_used"))
    row["barge_in"] = any(bool(t.get("barge_in")) for t in turns)
    row["trace_id"] = last.get("trace_id")
    row.update(latency.turn_fields(last, len(turns), utt.kind, before, latency.speculation_snapshot(conv)))
    flag = "" if row["turns"] == 1 else f"  <-- {row['turns']} turns"
    progress(
        f"{label:<14} {mode:<9} {utt.name:<20} dead_air={_fmt(row['dead_air_ms'])} "
        f"stt_final={_fmt(row['stt_final_ms'])} ttft={_fmt(row['llm_ttft_ms'])} ttfa={_fmt(row['tts_ttfa_ms'])} "
        f"total={_fmt(row['total_ms'])}  {row['transcript'][:40]!r} -> {row['reply'][:40]!r}{flag}"
    )
    return row


def _ms_since(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000.0, 1)


def _fmt(value: float | None) -> str:
    return "   -  " if value is None else f"{value:5.0f}ms"


async def warm_up_turns(
    addresses: dict[str, str], utt: Utterance, progress: Progress, modes: tuple[str, ...] = MODES
) -> None:
    for mode in modes:
        conv = open_conversation(addresses, mode, f"bench-warmup-{mode}-{uuid.uuid4().hex[:8]}")
        try:
            await run_turn(conv, utt, mode, "warm-up", progress)
        finally:
            await conv.close()


async def alternating(
    addresses: dict[str, str],
    utts: list[Utterance],
    rounds: int,
    progress: Progress,
    modes: tuple[str, ...] = MODES,
) -> list[dict[str, Any]]:
    """Each fixture in streaming and in sync mode back to back (order flipped every other turn), `rounds` times.

    A fresh conversation (session) per mode per round: both modes carry the same history length.
    """
    rows: list[dict[str, Any]] = []
    run = uuid.uuid4().hex[:8]
    for r in range(rounds):
        convs = {mode: open_conversation(addresses, mode, f"bench-{mode}-{run}-r{r}") for mode in modes}
        try:
            for i, utt in enumerate(utts):
                order = modes if (r * len(utts) + i) % 2 == 0 else modes[::-1]
                for mode in order:
                    label = f"r{r + 1}/{rounds} {i + 1}/{len(utts)}"
                    rows.append(await run_turn(convs[mode], utt, mode, label, progress))
        finally:
            for conv in convs.values():
                await conv.close()
    return rows


def summarize_turns(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """dead_air_ms per mode, the sync ÷ streaming ratio, latency breakdown and turn-taking quality."""
    out: dict[str, Any] = {"dead_air_ms": {}, "breakdown_ms": {}, "turn_taking": {}}
    modes = (*MODES, *sorted({r["mode"] for r in rows} - set(MODES)))
    for mode in modes:
        mine = [r for r in rows if r["mode"] == mode]
        dead = summarize(r.get("dead_air_ms") for r in mine)
        out["dead_air_ms"][mode] = {"p50": dead["p50"], "p95": dead["p95"], "n": dead["n"], "mean": dead["mean"]}
        out["breakdown_ms"][mode] = {name: summarize(r.get(name) for r in mine) for name in TURN_FIELDS}
        counts = turn_counts(int(r.get("turns", 0)) for r in mine)
        out["turn_taking"][mode] = {
            **counts,
            "errors": sum(1 for r in mine if "error" in r),
            "wer": corpus_wer((r["reference"], r.get("transcript", "")) for r in mine if "error" not in r),
            "preemptive_used": sum(1 for r in mine if r.get("preemptive_used")),
        }
    out["ratio_sync_over_streaming"] = ratio(out["dead_air_ms"]["sync"]["p50"], out["dead_air_ms"]["streaming"]["p50"])
    out.update(latency.summarize_latency(rows, modes))
    return out


async def concurrency(
    addresses: dict[str, str], utts: list[Utterance], levels: list[int], turns_each: int, progress: Progress
) -> dict[str, Any]:
    """`n` simultaneous streaming conversations (own session each), `turns_each` turns each, for n in levels."""
    out: dict[str, Any] = {}
    run = uuid.uuid4().hex[:8]
    for n in levels:

        async def one(c: int, n: int = n) -> list[dict[str, Any]]:
            conv = open_conversation(addresses, "streaming", f"bench-conc{n}-{run}-{c}")
            rows = []
            try:
                for k in range(turns_each):
                    utt = utts[(c + k * n) % len(utts)]
                    rows.append(await run_turn(conv, utt, "streaming", f"x{n} conv{c + 1} t{k + 1}", progress))
            finally:
                await conv.close()
            return rows

        t0 = time.perf_counter()
        per_conv = await asyncio.gather(*(one(c) for c in range(n)))
        rows = [row for conv_rows in per_conv for row in conv_rows]
        dead = summarize(r.get("dead_air_ms") for r in rows)
        counts = turn_counts(int(r.get("turns", 0)) for r in rows)
        out[str(n)] = {
            "conversations": n,
            "turns": len(rows),
            "dead_air_ms": {"p50": dead["p50"], "p95": dead["p95"], "max": dead["max"], "n": dead["n"]},
            "total_ms": summarize(r.get("total_ms") for r in rows),
            "premature": counts["premature"],
            "missed": counts["missed"],
            "errors": sum(1 for r in rows if "error" in r),
            "wall_s": round(time.perf_counter() - t0, 1),
            "rows": rows,
        }
    return out
