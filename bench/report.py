"""The benchmark report: machine description, aligned plain-text table, results.json."""

from __future__ import annotations

import datetime
import os
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bench import latency
from bench.stats import dig

SEED_BASELINE = {"dead_air_ms": 6090, "total_ms": 16510, "machine": "Apple M4"}


def machine_info(models: Mapping[str, Any] | None = None) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gib: float | None = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": memory_gib,
        "os": platform.platform(),
        "python": platform.python_version(),
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "models": dict(models or {}),
    }


def models_from_services(services: Mapping[str, Any]) -> dict[str, Any]:
    """backend/model (+ file name) of each service, from its SERVING start-up line."""
    out: dict[str, Any] = {}
    for kind, info in services.items():
        line = info.get("serving_line") or {}
        entry = {k: line[k] for k in ("backend", "model", "voice", "threads", "burst_threads") if k in line}
        if "path" in line:
            entry["file"] = Path(line["path"]).name
        out[kind] = entry
    return out


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Plain-text table: first column left-aligned, the others right-aligned; None shows as '-'."""

    def cell(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, bool):
            return "yes" if v else "NO"
        if isinstance(v, float):
            return f"{v:.3f}" if abs(v) < 10 else f"{v:.0f}"
        return str(v)

    text = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in text)) if text else len(h) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        parts = [values[0].ljust(widths[0])] + [v.rjust(w) for v, w in zip(values[1:], widths[1:], strict=True)]
        return "  ".join(parts).rstrip()

    return "\n".join([line(list(headers)), line(["-" * w for w in widths]), *(line(r) for r in text)])


def _p(section: Any, key: str = "p50") -> Any:
    return section.get(key) if isinstance(section, Mapping) else None


def _summary_row(label: str, summary: Any, note: str) -> list[Any]:
    """A components-table row: label, p50, p95 of a summary, note."""
    return [label, _p(summary), _p(summary, "p95"), note]


def render(results: Mapping[str, Any]) -> str:
    """The whole report as text (what `python -m bench` prints and RESULTS.md embeds)."""
    out: list[str] = []
    m = results.get("machine", {})
    out.append(f"Machine: {m.get('cpu')}, {m.get('cores')} cores, {m.get('memory_gib')} GiB, {m.get('os')}")
    out.append(
        f"Python {m.get('python')}, run at {m.get('timestamp')}, load avg (1 min) before/after {m.get('loadavg_1m_before_after')}"
    )
    for kind, model in (m.get("models") or {}).items():
        out.append(f"  {kind}: " + ", ".join(f"{k}={v}" for k, v in model.items()))
    cfg = results.get("config", {})
    if cfg:
        out.append("Config: " + ", ".join(f"{k}={v}" for k, v in cfg.items() if k != "fixtures"))
        out.append("Fixtures: " + ", ".join(cfg.get("fixtures", [])))

    dead = results.get("dead_air_ms") or {}
    if dead:
        out.append("")
        out.append("Dead air: last user speech sample sent -> first agent audio sample received (ms)")
        rows: list[list[Any]] = []
        for mode in dead:
            d = dead.get(mode, {})
            b = dig(results, "breakdown_ms", mode) or {}
            rows.append(
                [
                    mode,
                    d.get("n"),
                    d.get("p50"),
                    d.get("p95"),
                    _p(b.get("stt_final_ms")),
                    _p(b.get("llm_ttft_ms")),
                    _p(b.get("first_sentence_ms")),
                    _p(b.get("tts_ttfa_ms")),
                    _p(b.get("total_ms")),
                ]
            )
        seed = results.get("seed_baseline", SEED_BASELINE)
        rows.append(
            [f"seed ({seed['machine']})", None, seed["dead_air_ms"], None, None, None, None, None, seed["total_ms"]]
        )
        out.append(
            format_table(
                [
                    "mode",
                    "n",
                    "p50",
                    "p95",
                    "stt_final p50",
                    "llm_ttft p50",
                    "1st_sent p50",
                    "tts_ttfa p50",
                    "total p50",
                ],
                rows,
            )
        )
        out.append(f"ratio sync / streaming (p50): {results.get('ratio_sync_over_streaming')}x")

    tt = results.get("turn_taking") or {}
    if tt:
        out.append("")
        out.append("Turn-taking (one fixture = one utterance; premature = the agent took >1 turn)")
        out.append(
            format_table(
                ["mode", "fixtures", "ok", "premature", "missed", "errors", "WER"],
                [
                    [
                        mode,
                        v.get("fixtures"),
                        v.get("ok"),
                        v.get("premature"),
                        v.get("missed"),
                        v.get("errors"),
                        v.get("wer"),
                    ]
                    for mode, v in tt.items()
                ],
            )
        )
    out += latency.render(results, format_table)

    comp: list[list[Any]] = []
    stt = results.get("stt") or {}
    if stt:
        comp += [
            _summary_row("STT Recognize real-time factor", stt.get("rtf"), "processing_ms / audio_ms"),
            _summary_row("STT end of speech -> FINAL (ms)", stt.get("eos_to_final_ms"), "incl. endpoint silence"),
            _summary_row(
                "STT end of speech -> CANDIDATE_FINAL (ms)",
                stt.get("eos_to_candidate_ms"),
                "when a preemptive LLM call can start",
            ),
            _summary_row(
                "STT FINAL after endpoint (ms)",
                stt.get("final_after_endpoint_ms"),
                "client, from the audio that completed the endpoint",
            ),
            _summary_row("STT endpoint silence (ms)", stt.get("endpoint_silence_ms"), "FINAL audio_position - end_ms"),
            _summary_row(
                "STT FINAL decode (ms)",
                stt.get("final_decode_ms"),
                f"from candidate: {stt.get('final_from_candidate_rate')}",
            ),
            [
                "STT WER Recognize / streaming",
                stt.get("wer"),
                stt.get("streaming_wer"),
                f"premature FINALs: {stt.get('premature_finals')}",
            ],
        ]
    llm = results.get("llm") or {}
    if llm:
        comp += [
            _summary_row(
                "LLM time to first token, client (ms)",
                llm.get("ttft_client_ms"),
                f"server p50 {_p(llm.get('ttft_server_ms'))}",
            ),
            [
                "LLM ttft turn 1 / turn 2 (ms)",
                _p(llm.get("ttft_turn1_ms")),
                _p(llm.get("ttft_turn2_ms")),
                f"turn2/turn1 = {llm.get('ttft_turn2_over_turn1')}, cached p50 {_p(llm.get('cached_prompt_tokens_turn2'))} tok",
            ],
            [
                "LLM tokens/s (server / client)",
                _p(llm.get("tokens_per_second")),
                _p(llm.get("tokens_per_second_client")),
                f"max_tokens {llm.get('max_tokens')}",
            ],
        ]
    tts = results.get("tts") or {}
    if tts:
        comp += [
            _summary_row("TTS time to first audio (ms)", tts.get("ttfa_ms"), "Synthesize, client-measured"),
            ["TTS real-time factor", _p(tts.get("rtf")), _p(tts.get("rtf"), "p95"), "wall / audio seconds"],
        ]
    if comp:
        out.append("")
        out.append("Components (direct gRPC)")
        out.append(format_table(["measure", "p50", "p95", "note"], comp))

    services = results.get("services") or {}
    if services:
        out.append("")
        out.append("Services (load time from the 'SERVING ... load_s=' line; memory after the run)")
        out.append(
            format_table(
                ["service", "load_s", "RSS MiB", "peak RSS MiB"],
                [
                    [
                        kind,
                        s.get("load_s"),
                        round(s["rss_kib"] / 1024) if s.get("rss_kib") else None,
                        round(s["peak_rss_kib"] / 1024) if s.get("peak_rss_kib") else None,
                    ]
                    for kind, s in services.items()
                ],
            )
        )

    conc = results.get("concurrency") or {}
    if conc:
        out.append("")
        out.append("Concurrency (streaming mode, own session per conversation)")
        out.append(
            format_table(
                ["conversations", "turns", "dead air p50", "p95", "max", "premature", "errors"],
                [
                    [
                        n,
                        c.get("turns"),
                        _p(c.get("dead_air_ms")),
                        _p(c.get("dead_air_ms"), "p95"),
                        _p(c.get("dead_air_ms"), "max"),
                        c.get("premature"),
                        c.get("errors"),
                    ]
                    for n, c in conc.items()
                    if isinstance(c, Mapping)
                ],
            )
        )

    cap = results.get("capacity") or {}
    if cap:
        out.append("")
        per_set, cores = cap.get("conversations_per_replica_set"), cap.get("cores")
        out.append(
            f"Capacity: one replica of each service on {cores} cores serves {per_set} conversation(s) before dead air "
            f"p95 passes {cap.get('dead_air_p95_limit_ms', 0) / 1000:g} s ({cap.get('conversations_per_core')} per core; "
            f"levels tried {cap.get('levels_tried')}, first over: {cap.get('first_level_over')})"
        )
        if cap.get("sizing"):
            out.append(
                format_table(
                    ["conversations", "replicas of each", "cores", "memory MiB"],
                    [[r["conversations"], r["replicas_each"], r["cores"], r["memory_mib"]] for r in cap["sizing"]],
                )
            )

    targets = results.get("targets") or {}
    if targets:
        out.append("")
        out.append("Targets (reported, not gates)")
        out.append(
            format_table(
                ["target", "value", "wanted", "met"],
                [[name, t.get("value"), t.get("target"), t.get("met")] for name, t in targets.items()],
            )
        )
    for note in results.get("notes", []):
        out.append(f"note: {note}")
    return "\n".join(out)


def strip_rows(data: Any) -> Any:
    """A copy without the per-item "rows" lists (for the compact summary)."""
    if isinstance(data, Mapping):
        return {k: strip_rows(v) for k, v in data.items() if k != "rows"}
    if isinstance(data, list):
        return [strip_rows(v) for v in data]
    return data
