"""The benchmark's statistics, report and turn-row code (no services needed; fakes where a conversation is needed)."""

from __future__ import annotations

import asyncio
import json

import pytest

from bench.fixtures import Utterance
from bench.report import format_table, render
from bench.stats import (
    check_target,
    corpus_wer,
    evaluate_targets,
    normalize_words,
    percentile,
    ratio,
    summarize,
    turn_counts,
    wer,
)
from bench.turns import run_turn, summarize_turns


def test_percentile_interpolates_like_numpy() -> None:
    values = [10.0, 20.0, 30.0, 40.0]
    assert percentile(values, 50) == 25.0
    assert percentile(values, 95) == pytest.approx(38.5)
    assert percentile(values, 0) == 10.0
    assert percentile(values, 100) == 40.0
    assert percentile([7.0], 95) == 7.0
    assert percentile([], 50) is None
    assert percentile([3.0, float("nan"), 1.0], 50) == 2.0


def test_percentile_rejects_out_of_range_q() -> None:
    with pytest.raises(ValueError, match=r"0\.\.100"):
        percentile([1.0], 101)


def test_summarize_ignores_missing_values() -> None:
    s = summarize([100.0, None, 300.0, 200.0])
    assert s["n"] == 3
    assert s["p50"] == 200.0
    assert s["min"] == 100.0 and s["max"] == 300.0
    assert summarize([])["p50"] is None


def test_ratio() -> None:
    assert ratio(3000.0, 400.0) == 7.5
    assert ratio(None, 400.0) is None
    assert ratio(3000.0, 0.0) is None


def test_wer_normalizes_case_punctuation_and_numbers() -> None:
    assert wer("Set a timer for ten minutes, please.", "set a timer for 10 minutes please") == 0.0
    assert normalize_words("It's 42!") == ["it's", "forty", "two"]
    assert wer("what time is it", "what time it") == 0.25  # one deletion
    assert wer("what time is it", "what the time is it now") == 0.5  # two insertions
    assert wer("", "") == 0.0
    assert corpus_wer([("a b c d", "a b c d"), ("e f", "e x")]) == pytest.approx(1 / 6, abs=1e-4)
    assert corpus_wer([]) is None


def test_turn_counts_premature_and_missed() -> None:
    counts = turn_counts([1, 1, 2, 0, 3])
    assert counts == {"fixtures": 5, "ok": 2, "premature": 2, "missed": 1}


def test_check_target() -> None:
    assert check_target(350.0, 400)["met"] is True
    assert check_target(450.0, 400)["met"] is False
    assert check_target(6.0, 5, higher_is_better=True)["met"] is True
    assert check_target(None, 5)["met"] is None


def _row(mode: str, dead_air: float, turns: int = 1) -> dict[str, object]:
    return {
        "mode": mode,
        "fixture": "f",
        "reference": "what time is it",
        "transcript": "what time is it",
        "turns": turns,
        "dead_air_ms": dead_air,
        "total_ms": dead_air + 1000,
    }


def test_turn_summary_ratio_and_premature_count() -> None:
    rows = [_row("streaming", d) for d in (300.0, 400.0, 500.0)]
    rows += [_row("sync", d) for d in (2000.0, 2400.0, 2800.0)]
    rows.append(_row("streaming", 450.0, turns=2))
    summary = summarize_turns(rows)
    assert summary["dead_air_ms"]["streaming"]["p50"] == 425.0
    assert summary["dead_air_ms"]["sync"]["p50"] == 2400.0
    assert summary["ratio_sync_over_streaming"] == pytest.approx(5.65, abs=0.01)
    assert summary["turn_taking"]["streaming"]["premature"] == 1
    assert summary["turn_taking"]["sync"]["premature"] == 0
    assert summary["turn_taking"]["sync"]["wer"] == 0.0

    results = {**summary, "seed_baseline": {"dead_air_ms": 6090, "total_ms": 16510, "machine": "Apple M4"}}
    results["targets"] = evaluate_targets(results)
    assert results["targets"]["premature_turns"]["met"] is False
    assert results["targets"]["ratio_sync_over_streaming"]["met"] is True
    assert results["targets"]["streaming_dead_air_p50_ms"]["met"] is False
    text = render(results)
    assert "streaming" in text and "sync" in text and "Apple M4" in text
    json.dumps(results)  # results.json must be serializable


def test_format_table_aligns_columns() -> None:
    table = format_table(["name", "p50"], [["streaming", 312.0], ["sync", 2401.5], ["x", None]])
    lines = table.splitlines()
    assert len({len(line) for line in lines[:3]}) == 1  # header, rule and first row equally wide
    assert lines[-1].endswith("-")


def test_capacity_is_the_last_level_under_the_dead_air_limit_and_sizing_scales_from_it() -> None:
    from bench.capacity import capacity, sizing

    runs = {
        "1": {"dead_air_ms": {"p95": 900.0}, "errors": 0},
        "2": {"dead_air_ms": {"p95": 1200.0}, "errors": 0},
        "4": {"dead_air_ms": {"p95": 1900.0}, "errors": 0},
        "6": {"dead_air_ms": {"p95": 1400.0}, "errors": 0},  # above a failing level: not counted
    }
    cap = capacity(runs, cores=2)
    assert (cap["conversations_per_replica_set"], cap["first_level_over"], cap["conversations_per_core"]) == (2, 4, 1.0)
    rows = sizing(cap, {"stt": 230.0, "llm": 1050.0, "tts": 270.0}, conversations=(1, 10))
    assert rows == [
        {"conversations": 1, "replicas_each": 1, "cores": 2, "memory_mib": 1550},
        {"conversations": 10, "replicas_each": 5, "cores": 10, "memory_mib": 7750},
    ]
    assert capacity({"1": {"dead_air_ms": {"p95": 100.0}, "errors": 1}}, cores=2)["conversations_per_replica_set"] == 0


def test_latency_summary_decisions_after_endpoint_and_speculation() -> None:
    from bench.latency import summarize_latency, turn_fields

    spec_before = {"tokens": 10, "discarded_tokens": 2, "tts_ms": 100.0, "discarded_tts_ms": 0.0}
    spec_after = {"tokens": 30, "discarded_tokens": 7, "tts_ms": 900.0, "discarded_tts_ms": 300.0}
    rows = []
    for mode, kind, dead, endpoint, turns in (
        ("streaming", "question", 500.0, 200, 1),
        ("streaming", "fast", 1500.0, 0, 1),  # FINAL only when the input ended: late
        ("streaming", "long_reply", 600.0, 1000, 1),  # waited the long endpoint: late
        ("streaming", "paused_clause", 700.0, 200, 2),  # answered in the pause: premature
        ("sync", "question", 1500.0, 320, 1),
        ("sync", "long_reply", 6000.0, 320, 1),
    ):
        row = {"mode": mode, "turns": turns, "dead_air_ms": dead}
        last = {"dead_air_ms": dead, "endpoint_silence_ms": endpoint}
        row.update(turn_fields(last, turns, kind, spec_before, spec_after if mode == "streaming" else {}))
        rows.append(row)
    out = summarize_latency(rows, ("streaming", "sync"))
    assert out["end_of_turn"]["streaming"] == {"ok": 1, "late": 2, "premature": 1, "missed": 0}
    assert out["premature_turns"] == 1
    assert out["after_endpoint_ms"]["p50"] == 300.0  # of 500-200, 600-1000, 700-200
    assert out["speculative_discarded"]["tokens"] == 20 and out["speculative_discarded"]["tokens_total"] == 80
    assert out["speculative_discarded"]["tokens_pct"] == 25.0 and out["speculative_discarded"]["tts_ms"] == 1200
    assert out["ratio_sync_over_streaming_by_reply"]["long_reply"]["ratio"] == 10.0
    assert out["dead_air_by_kind_ms"]["streaming"]["paused_clause"]["p50"] == 700.0


class FakeConversationAnsweringOutOfOrder:
    """Fake: the turn the user barged into (utterance 0) finishes after the one that cut it off."""

    async def run_file(self, pcm: bytes, rate: int, *, pace: bool, speech_end_ms: int) -> list[dict]:
        return [
            {
                "utterance_index": 1,
                "transcript": "what your country can do for you",
                "reply": "B",
                "dead_air_ms": 700.0,
            },
            {"utterance_index": 0, "transcript": "and so my fellow americans", "reply": "A", "dead_air_ms": 900.0},
        ]


def test_a_turn_row_reads_the_turns_in_the_order_they_were_spoken() -> None:
    utt = Utterance("jfk", "and so my fellow americans what your country can do for you", b"", 16000, 0, 0, 0, "human")
    row = asyncio.run(run_turn(FakeConversationAnsweringOutOfOrder(), utt, "streaming", "r1", lambda line: None))
    assert row["transcript"] == "and so my fellow americans what your country can do for you"
    assert row["turns"] == 2 and row["dead_air_ms"] == 700.0, "the last utterance's reply answers the end of speech"
