"""Issue-15 figures of the spoken turns: dead air per kind of fixture, the processing after the
endpoint decision, end-of-turn decisions (premature / late / ok), speculative work discarded,
and sync ÷ streaming on long replies apart from short ones."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bench.stats import ratio, summarize

# An endpoint this long is the STT's "unfinished" wait: on a fixture whose utterance is complete at
# its end, that turn was late (every fixture holds one finished utterance).
LATE_ENDPOINT_MS = 900
KINDS = ("question", "paused", "paused_clause", "fast", "long_reply", "memory", "human")
SPECULATION_KEYS = ("tokens", "discarded_tokens", "tts_ms", "discarded_tts_ms", "replies", "discarded_replies")


def speculation_snapshot(conv: Any) -> dict[str, float]:
    stats = getattr(conv, "speculation", None)
    return dict(stats.as_dict()) if stats is not None else {}


def turn_fields(
    last: Mapping[str, Any], turns: int, kind: str, before: Mapping[str, float], after: Mapping[str, float]
) -> dict[str, Any]:
    """Per-row fields: endpoint, LLM end-of-turn score, after-endpoint processing, decision, speculation."""
    endpoint = int(last.get("endpoint_silence_ms") or 0)
    dead = last.get("dead_air_ms")
    row: dict[str, Any] = {
        "kind": kind,
        "endpoint_silence_ms": endpoint or None,
        "end_of_turn_probability": last.get("end_of_turn_probability"),
        "after_endpoint_ms": round(float(dead) - endpoint, 1) if dead is not None and endpoint else None,
    }
    row["decision"] = decision(turns, endpoint)
    row["speculation"] = {k: round(after.get(k, 0) - before.get(k, 0), 1) for k in SPECULATION_KEYS if after}
    return row


def decision(turns: int, endpoint_ms: int) -> str:
    """premature: more than one turn; late: the long endpoint, or no endpoint at all (the FINAL came
    when the input ended, after the fixture's 1 s of trailing silence); ok otherwise."""
    if turns > 1:
        return "premature"
    if turns == 0:
        return "missed"
    return "late" if endpoint_ms >= LATE_ENDPOINT_MS or endpoint_ms == 0 else "ok"


def _decision(row: Mapping[str, Any]) -> str:
    return decision(int(row.get("turns", 0)), int(row.get("endpoint_silence_ms") or 0))


def _dead(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    d = summarize(r.get("dead_air_ms") for r in rows)
    return {"p50": d["p50"], "p95": d["p95"], "n": d["n"]}


def summarize_latency(rows: Sequence[Mapping[str, Any]], modes: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"dead_air_by_kind_ms": {}, "end_of_turn": {}, "after_endpoint_by_mode_ms": {}}
    for mode in modes:
        mine = [r for r in rows if r["mode"] == mode and "error" not in r]
        out["dead_air_by_kind_ms"][mode] = {k: _dead([r for r in mine if r.get("kind") == k]) for k in KINDS}
        out["end_of_turn"][mode] = {
            k: sum(1 for r in mine if _decision(r) == k) for k in ("ok", "late", "premature", "missed")
        }
        after = summarize(r.get("after_endpoint_ms") for r in mine)
        out["after_endpoint_by_mode_ms"][mode] = {"p50": after["p50"], "p95": after["p95"], "n": after["n"]}
    streaming_after = out["after_endpoint_by_mode_ms"].get("streaming", {})
    out["after_endpoint_ms"] = dict(streaming_after)
    # The headline counts the product (streaming); the other modes are the baselines it is compared with.
    out["premature_turns_by_mode"] = {mode: v["premature"] for mode, v in out["end_of_turn"].items()}
    out["premature_turns"] = out["premature_turns_by_mode"].get("streaming", 0)
    spec = [r.get("speculation") or {} for r in rows if r["mode"] == "streaming"]
    total = {k: sum(float(s.get(k, 0)) for s in spec) for k in SPECULATION_KEYS}
    out["speculative_discarded"] = {
        "tokens_pct": round(100 * total["discarded_tokens"] / total["tokens"], 1) if total["tokens"] else 0.0,
        "tokens": int(total["discarded_tokens"]),
        "tokens_total": int(total["tokens"]),
        "tts_ms": round(total["discarded_tts_ms"]),
        "tts_ms_total": round(total["tts_ms"]),
        "replies": int(total["discarded_replies"]),
        "replies_total": int(total["replies"]),
    }
    by_len: dict[str, Any] = {}
    for name, test in (("long_reply", lambda k: k == "long_reply"), ("short", lambda k: k != "long_reply")):
        p50 = {m: _dead([r for r in rows if r["mode"] == m and test(r.get("kind"))])["p50"] for m in modes}
        by_len[name] = {"streaming_p50": p50.get("streaming"), "sync_p50": p50.get("sync")}
        by_len[name]["ratio"] = ratio(p50.get("sync"), p50.get("streaming"))
    out["ratio_sync_over_streaming_by_reply"] = by_len
    return out


def render(results: Mapping[str, Any], format_table: Any) -> list[str]:
    """Report lines for the issue-15 figures (empty when the turns were not run)."""
    by_kind = results.get("dead_air_by_kind_ms")
    if not by_kind:
        return []
    out = ["", "Dead air by kind of fixture (ms; paused_clause: 300-900 ms pauses after complete-sounding clauses)"]
    rows = []
    modes = list(by_kind)
    for kind in KINDS:
        row: list[Any] = [kind, by_kind.get("streaming", {}).get(kind, {}).get("n")]
        for mode in modes:
            d = by_kind[mode].get(kind, {})
            row += [d.get("p50"), d.get("p95")]
        rows.append(row)
    headers = ["kind", "n"] + [h for mode in modes for h in (f"{mode} p50", "p95")]
    out.append(format_table(headers, rows))
    out += ["", "End of turn (premature = cut the user off; late = waited the long endpoint on a finished utterance)"]
    rows = []
    after = results.get("after_endpoint_by_mode_ms") or {}
    for mode, counts in (results.get("end_of_turn") or {}).items():
        a = after.get(mode, {})
        rows.append(
            [mode, counts["ok"], counts["late"], counts["premature"], counts["missed"], a.get("p50"), a.get("p95")]
        )
    out.append(format_table(["mode", "ok", "late", "premature", "missed", "after-endpoint p50", "p95"], rows))
    spec = results.get("speculative_discarded") or {}
    out.append(
        f"Speculative work discarded (streaming): {spec.get('tokens')} of {spec.get('tokens_total')} LLM tokens "
        f"({spec.get('tokens_pct')} %), {spec.get('tts_ms')} of {spec.get('tts_ms_total')} ms of TTS audio, "
        f"{spec.get('replies')} of {spec.get('replies_total')} replies"
    )
    for name, llm_stats in (results.get("service_stats_after") or {}).items():
        if "burst_granted_total" in llm_stats or "burst_refused_busy_total" in llm_stats:
            out.append(
                f"LLM idle-core burst (whole run, {name}): {llm_stats.get('burst_granted_total', 0)} model calls "
                f"on 2 threads, {llm_stats.get('burst_refused_busy_total', 0)} refused (machine busy), "
                f"{llm_stats.get('burst_refused_shared_total', 0)} refused (another conversation), "
                f"{llm_stats.get('burst_stalls_total', 0)} ended by a stalled token"
            )
    by_len = results.get("ratio_sync_over_streaming_by_reply") or {}
    out.append(
        "Sync / streaming dead air p50: "
        + ", ".join(
            f"{name} replies {v.get('sync_p50')} / {v.get('streaming_p50')} = {v.get('ratio')}x"
            for name, v in by_len.items()
        )
    )
    return out
