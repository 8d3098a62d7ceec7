"""Statistics used by the benchmark report: percentiles, ratios, word error rate, turn counts.

Pure functions, no I/O, so they can be tested without any service running.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

_SMALL = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def percentile(values: Iterable[float], q: float) -> float | None:
    """The q-th percentile (0..100) with linear interpolation between closest ranks (numpy's default).

    None for no values; NaNs are ignored.
    """
    data = sorted(v for v in values if v is not None and not math.isnan(v))
    if not data:
        return None
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile q must be within 0..100, got {q}")
    pos = (len(data) - 1) * q / 100.0
    low = math.floor(pos)
    high = math.ceil(pos)
    if low == high:
        return float(data[low])
    return float(data[low] + (data[high] - data[low]) * (pos - low))


def summarize(values: Iterable[float | None]) -> dict[str, Any]:
    """{"n", "p50", "p95", "mean", "min", "max"} of the non-None values (0.1 above 10, else 0.001)."""
    data = [float(v) for v in values if v is not None and not math.isnan(float(v))]

    def r(x: float | None) -> float | None:
        if x is None:
            return None
        return round(x, 1) if abs(x) >= 10 else round(x, 3)

    return {
        "n": len(data),
        "p50": r(percentile(data, 50)),
        "p95": r(percentile(data, 95)),
        "mean": r(sum(data) / len(data)) if data else None,
        "min": r(min(data)) if data else None,
        "max": r(max(data)) if data else None,
    }


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator ÷ denominator rounded to 0.01; None when either is missing or the denominator is <= 0."""
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return round(numerator / denominator, 2)


def _number_words(n: int) -> str:
    if n < 20:
        return _SMALL[n]
    if n < 100:
        tens, unit = divmod(n, 10)
        return _TENS[tens] + ("" if unit == 0 else " " + _SMALL[unit])
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return _SMALL[hundreds] + " hundred" + ("" if rest == 0 else " " + _number_words(rest))
    return str(n)


def normalize_words(text: str) -> list[str]:
    """Lower-case words without punctuation; digits spelled out (0-999) so "10" matches "ten"."""
    text = text.lower().replace("\u2019", "'")
    text = re.sub(r"(\d),(\d)", r"\1\2", text)
    text = re.sub(r"\d+", lambda m: f" {_number_words(int(m.group()))} ", text)
    text = re.sub(r"[^a-z0-9' ]+", " ", text)
    return [w.strip("'") for w in text.split() if w.strip("'")]


def edit_distance(ref: Sequence[str], hyp: Sequence[str]) -> int:
    """Levenshtein distance between two word sequences (substitutions, insertions, deletions)."""
    prev = list(range(len(hyp) + 1))
    for i, r_word in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h_word in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r_word != h_word))
        prev = cur
    return prev[-1]


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate of one hypothesis: edits ÷ reference words (1.0 per word when the reference is empty)."""
    ref = normalize_words(reference)
    hyp = normalize_words(hypothesis)
    if not ref:
        return 0.0 if not hyp else float(len(hyp))
    return edit_distance(ref, hyp) / len(ref)


def corpus_wer(pairs: Iterable[tuple[str, str]]) -> float | None:
    """Word error rate over many (reference, hypothesis) pairs: total edits ÷ total reference words."""
    edits = 0
    words = 0
    for reference, hypothesis in pairs:
        ref = normalize_words(reference)
        edits += edit_distance(ref, normalize_words(hypothesis))
        words += len(ref)
    if words == 0:
        return None
    return round(edits / words, 4)


def turn_counts(turns_per_fixture: Iterable[int]) -> dict[str, int]:
    """Turn-taking outcome of spoken fixtures that each hold ONE utterance.

    premature: the fixture produced more than one turn (the agent cut in during a pause);
    missed: it produced no turn at all; ok: exactly one.
    """
    counts = {"fixtures": 0, "ok": 0, "premature": 0, "missed": 0}
    for n in turns_per_fixture:
        counts["fixtures"] += 1
        if n == 1:
            counts["ok"] += 1
        elif n > 1:
            counts["premature"] += 1
        else:
            counts["missed"] += 1
    return counts


def check_target(value: float | None, limit: float, higher_is_better: bool = False) -> dict[str, Any]:
    """{"value", "target", "met"}; met is None when the value was not measured."""
    met: bool | None
    if value is None:
        met = None
    else:
        met = value >= limit if higher_is_better else value <= limit
    op = ">=" if higher_is_better else "<="
    return {"value": value, "target": f"{op} {limit:g}", "met": met}


def dig(data: Mapping[str, Any], *keys: str) -> Any:
    """data[k1][k2]... or None when any level is missing."""
    cur: Any = data
    for key in keys:
        if not isinstance(cur, Mapping) or key not in cur:
            return None
        cur = cur[key]
    return cur


def evaluate_targets(results: Mapping[str, Any]) -> dict[str, Any]:
    """The project's latency/turn-taking targets against measured results (reported, not gates)."""
    premature_total: int | None = None
    tt = results.get("turn_taking") or {}
    if tt:
        premature_total = sum(int(v.get("premature", 0)) for v in tt.values() if isinstance(v, Mapping))
    if results.get("premature_turns") is not None:  # streaming (bench.latency); baselines reported apart
        premature_total = int(results["premature_turns"])
    return {
        "streaming_dead_air_p50_ms": check_target(dig(results, "dead_air_ms", "streaming", "p50"), 400),
        "streaming_dead_air_p95_ms": check_target(dig(results, "dead_air_ms", "streaming", "p95"), 700),
        "ratio_sync_over_streaming": check_target(results.get("ratio_sync_over_streaming"), 5, higher_is_better=True),
        "after_endpoint_p50_ms": check_target(dig(results, "after_endpoint_ms", "p50"), 80),
        "stt_final_after_endpoint_ms": check_target(dig(results, "stt", "final_after_endpoint_ms", "p50"), 150),
        "llm_ttft_ms": check_target(dig(results, "llm", "ttft_client_ms", "p50"), 60),
        "tts_ttfa_ms": check_target(dig(results, "tts", "ttfa_ms", "p50"), 150),
        "premature_turns": check_target(premature_total, 0),
    }
