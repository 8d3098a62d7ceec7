"""`python -m bench` / `make bench`: start the services (or use running ones), measure, report.

python -m bench                       # start the 3 services on free ports, run everything
python -m bench --use-running         # use `make serve` services (or --stt-address ... )
python -m bench --components-only     # no orchestrator turns
python -m bench --rounds 3 --write-md # more turns; also rewrite bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import grpc

from bench import capacity, components, report, turns
from bench.fixtures import FIXTURE_DIR, MAX_TURN_MS, load_utterances
from bench.services import KINDS, LLM_BURST, LLM_MODEL, ServiceSet
from bench.stats import evaluate_targets
from orchestrator.config import CANDIDATE_SILENCE_MS
from service_runtime import telemetry
from service_runtime.config import float_in, int_at_least, int_in

BENCH_DIR = Path(__file__).resolve().parent


def concurrency_levels(text: str) -> list[int]:
    """'1,2,4' -> [1, 2, 4]; '' -> [] (skip); each level a whole number of conversations >= 1."""
    parts = [x.strip() for x in text.split(",") if x.strip()]
    if not all(x.isdigit() and int(x) >= 1 for x in parts):
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: allowed comma-separated integers >= 1, or ''")
    return [int(x) for x in parts]


def progress(line: str) -> None:
    print(line, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument(
        "--rounds",
        type=int_at_least(0),
        default=2,
        help="times each fixture is spoken in EACH mode (default %(default)s)",
    )
    p.add_argument("--use-running", action="store_true", help="use running services (default ports or the addresses)")
    for kind in KINDS:
        p.add_argument(f"--{kind}-address", metavar="HOST:PORT", help=f"running {kind}-service (implies --use-running)")
    p.add_argument("--fixtures", help="comma-separated fixture names (default: all single utterances of 2-12 s)")
    p.add_argument("--components-only", action="store_true", help="skip the orchestrator turns")
    p.add_argument("--skip-components", action="store_true", help="skip the direct gRPC component measurements")
    p.add_argument(
        "--concurrency", type=concurrency_levels, default="1,2,4", help="simultaneous conversations to try ('' = skip)"
    )
    p.add_argument("--concurrency-turns", type=int_at_least(1), default=2, help="turns per conversation at each level")
    p.add_argument(
        "--realtime-playback",
        action="store_true",
        help="play each reply in simulated real time before the next turn (slower; dead air unchanged)",
    )
    p.add_argument(
        "--compare-hints",
        action="store_true",
        help="also run streaming without the LLM end-of-turn hints (the STT's own endpointing) in the same run",
    )
    p.add_argument(
        "--compare-burst",
        action="store_true",
        help="also run streaming on a second llm-service with --burst-threads 2 (the idle-core burst) in the same run",
    )
    p.add_argument(
        "--compare-llm-model",
        default="",
        metavar="MODEL",
        help="also run streaming on a second llm-service with --model MODEL (a preset such as qwen2.5-0.5b-q4_0, or\n"
        "a GGUF path) in the same run",
    )
    p.add_argument(
        "--compare-candidate",
        type=int_in(*CANDIDATE_SILENCE_MS, or_zero=True),
        default=0,
        metavar="MS",
        help="also run streaming with the reply started after MS of silence (CANDIDATE_FINAL; the orchestrator's is 32) in\n"
        "the same run (0 = not)",
    )
    p.add_argument(
        "--reply-seed",
        type=int_in(-1, 2**32 - 1),
        default=1,
        help="LLM sampling seed of every turn (temperature stays the server's): each mode and each run gets the\n"
        "same replies to the same words, so modes and runs compare like with like (-1 = random; default %(default)s)",
    )
    p.add_argument("--llm-max-tokens", type=int_at_least(1), default=64, help="max_tokens of the LLM component runs")
    p.add_argument("--out", type=Path, default=BENCH_DIR / "results.json", help="results file (default %(default)s)")
    p.add_argument("--log-dir", type=Path, default=BENCH_DIR / "out", help="service logs, table, details")
    p.add_argument("--write-md", action="store_true", help="also rewrite bench/RESULTS.md with the table")
    p.add_argument("--no-write", action="store_true", help="print only, write no results file")
    p.add_argument("--start-timeout-s", type=float_in(0, low_open=True), default=600.0)
    return p.parse_args(argv)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    names = args.fixtures.split(",") if args.fixtures else None
    utts = load_utterances(FIXTURE_DIR, names=names, max_ms=MAX_TURN_MS)
    if not utts:
        raise SystemExit(f"no usable fixtures in {FIXTURE_DIR}")
    if len(utts) < 5:
        progress(f"warning: only {len(utts)} fixtures (the bench wants >= 5 different utterances)")
    addresses = {k: getattr(args, f"{k}_address") for k in KINDS if getattr(args, f"{k}_address")}
    results: dict[str, Any] = {"notes": []}
    turns.REPLY_SEED = None if args.reply_seed < 0 else args.reply_seed
    turns.EARLY_CANDIDATE_MS = args.compare_candidate or turns.EARLY_CANDIDATE_MS
    results["config"] = {
        "rounds": args.rounds,
        "concurrency": args.concurrency,
        "concurrency_turns": args.concurrency_turns,
        "pace": "real-time, 20 ms chunks (components) / orchestrator run_file(pace=True)",
        "realtime_playback": args.realtime_playback,
        "reply_seed": turns.REPLY_SEED,
        "early_candidate_ms": args.compare_candidate or None,
        "compared_llm_model": args.compare_llm_model or None,
        "fixtures": [u.name for u in utts],
    }

    load_before = os.getloadavg()
    phases: dict[str, float] = {}
    turns.REALTIME_PLAYBACK = args.realtime_playback
    t_start = time.perf_counter()
    llm_variants = {
        **({LLM_BURST: ["--burst-threads", "2"]} if args.compare_burst else {}),
        **({LLM_MODEL: ["--model", args.compare_llm_model]} if args.compare_llm_model else {}),
    }
    if llm_variants and (args.use_running or addresses):
        raise SystemExit(
            "--compare-burst and --compare-llm-model start their own services (a second llm-service); "
            "drop --use-running/--*-address"
        )
    if args.use_running or addresses:
        progress("attaching to running services ...")
        services = ServiceSet.attach(addresses)
    else:
        progress(f"starting stt/llm/tts services on free ports (logs in {args.log_dir}) ...")
        services = ServiceSet.start(args.log_dir, timeout_s=args.start_timeout_s, llm_variants=llm_variants)
    progress(f"services SERVING after {time.perf_counter() - t_start:.1f}s: {services.addresses}")

    channels = {kind: grpc.aio.insecure_channel(addr) for kind, addr in services.addresses.items()}
    try:
        phases["start_s"] = round(time.perf_counter() - t_start, 1)
        mark = time.perf_counter()
        progress("warming up (one call per service) ...")
        await components.warm_up(channels, utts[0])
        if not args.skip_components:
            progress("STT: Recognize each fixture (real-time factor)")
            stt = await components.stt_recognize(channels["stt"], utts, progress)
            progress("STT: StreamingRecognize at real-time pace (end of speech -> FINAL)")
            stt.update(
                {
                    k: v
                    for k, v in (await components.stt_streaming(channels["stt"], utts, progress)).items()
                    if k != "rows"
                }
            )
            results["stt"] = stt
            progress("LLM: two turns per session (time to first token, tokens/s)")
            results["llm"] = await components.llm_bench(channels["llm"], progress, args.llm_max_tokens)
            progress("TTS: Synthesize agent-like replies (time to first audio, real-time factor)")
            results["tts"] = await components.tts_bench(channels["tts"], progress)

        phases["components_s"] = round(time.perf_counter() - mark, 1)
        mark = time.perf_counter()
        if args.components_only:
            results["notes"].append("turns skipped (--components-only)")
        elif importlib.util.find_spec("orchestrator.conversation") is None:
            results["notes"].append("turns skipped: orchestrator.conversation is not available")
            progress("orchestrator.conversation not found: skipping the spoken turns")
        else:
            modes = (
                *turns.MODES,
                *([turns.NO_HINTS] if args.compare_hints else []),
                *([turns.BURST] if args.compare_burst else []),
                *([turns.OTHER_MODEL] if args.compare_llm_model else []),
                *([turns.EARLY] if args.compare_candidate else []),
            )
            progress("warm-up turns (one per mode, not counted)")
            await turns.warm_up_turns(services.addresses, utts[0], progress, modes)
            progress(
                f"spoken turns: {len(utts)} fixtures x {args.rounds} round(s), modes {', '.join(modes)} alternating"
            )
            rows = await turns.alternating(services.addresses, utts, args.rounds, progress, modes)
            results.update(turns.summarize_turns(rows))
            results["turns"] = rows
            phases["turns_s"] = round(time.perf_counter() - mark, 1)
            mark = time.perf_counter()
            levels = args.concurrency
            if levels:
                progress(
                    f"concurrency: {levels} simultaneous streaming conversations, {args.concurrency_turns} turns each"
                )
                results["concurrency"] = await turns.concurrency(
                    services.addresses, utts, levels, args.concurrency_turns, progress
                )
            phases["concurrency_s"] = round(time.perf_counter() - mark, 1)
        results["service_stats_after"] = await components.service_stats(channels)
        results["services"] = services.describe()
        if results.get("concurrency"):
            cap = capacity.capacity(results["concurrency"], os.cpu_count() or 1)
            rss = {k: (s.get("peak_rss_kib") or 0) / 1024 for k, s in results["services"].items()}
            results["capacity"] = {**cap, "sizing": capacity.sizing(cap, rss)}
    finally:
        for channel in channels.values():
            await channel.close()
        if services.stop():
            progress("services stopped")

    results["machine"] = report.machine_info(report.models_from_services(results.get("services", {})))
    # Other work on the machine skews every number: record the 1-min load average around the run.
    results["machine"]["loadavg_1m_before_after"] = [round(load_before[0], 2), round(os.getloadavg()[0], 2)]
    results["targets"] = evaluate_targets(results)
    results["seed_baseline"] = report.SEED_BASELINE
    results["bench_wall_s"] = round(time.perf_counter() - started, 1)
    results["phases_s"] = phases
    return results


def order(results: dict[str, Any]) -> dict[str, Any]:
    """Headline keys first in results.json."""
    first = ["dead_air_ms", "after_endpoint_ms", "premature_turns", "speculative_discarded", "end_of_turn"]
    first += ["dead_air_by_kind_ms", "ratio_sync_over_streaming", "ratio_sync_over_streaming_by_reply", "targets"]
    first += ["turn_taking", "stt", "llm", "tts", "concurrency"]
    first += ["capacity"]
    first += ["services", "machine", "seed_baseline", "config", "breakdown_ms", "bench_wall_s", "notes"]
    out = {k: results[k] for k in first if k in results}
    out.update({k: v for k, v in results.items() if k not in out})
    return out


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM like Ctrl-C: unwind so the services we started are stopped


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    telemetry.setup_tracing("orchestrator")  # the turns' spans (exported when OTEL_EXPORTER_OTLP_ENDPOINT is set)
    try:
        results = order(asyncio.run(run(args)))
    finally:
        telemetry.shutdown_tracing()
    table = report.render(results)
    print()
    print(table)
    print(f"\nbench took {results['bench_wall_s']}s {results.get('phases_s')}")
    if args.no_write:
        return
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1, default=str) + "\n")
    args.log_dir.mkdir(parents=True, exist_ok=True)
    (args.log_dir / "table.txt").write_text(table + "\n")
    print(f"wrote {args.out} and {args.log_dir / 'table.txt'}")
    if args.write_md:
        write_results_md(BENCH_DIR / "RESULTS.md", table)
        print(f"wrote {BENCH_DIR / 'RESULTS.md'}")


def write_results_md(path: Path, table: str) -> None:
    """Replace the generated block of RESULTS.md (between the markers), keeping hand-written notes."""
    start, end = "<!-- bench:table:start -->", "<!-- bench:table:end -->"
    block = f"{start}\n```text\n{table}\n```\n{end}"
    text = path.read_text() if path.exists() else "# Benchmark results\n\n" + start + "\n" + end + "\n"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        tail = rest.split(end, 1)[1]
        text = head + block + tail
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except KeyboardInterrupt:
        sys.exit(130)
