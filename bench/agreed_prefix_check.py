"""Agreed-prefix check (issue 15): does forcing the words two INTERIM hypotheses agree on make the
CANDIDATE_FINAL decode cheaper?

The LocalAgreement policy of whisper_streaming (Machacek et al. 2023) commits a prefix confirmed by
two consecutive hypotheses. Here: the longest common prefix of the last two INTERIM decodes' token
ids, minus its last word (it may still change), is forced after the prompt of the candidate decode
(`FasterWhisperEngine.transcribe(prefix_tokens=...)`); greedy decoding continues from there.

Offline, no services. Each single-utterance fixture goes through the real Silero VAD and the STT's
`UtteranceTracker` (INTERIM every 700 ms of voice; hints on and never sent, so the utterance stays
whole across its pauses as with the orchestrator's hints); every INTERIM and CANDIDATE window is
decoded with the bundled tiny.en (int8, 1 thread) as the service does (all interims: none skipped
for a busy decoder). For every candidate: decode ms (median of --reps, variants interleaved) with
nothing forced, with the agreed prefix, and with half / all but the last 2 words of the candidate's
own tokens forced (the most any agreement could give); whether the text is identical; WER of the
last candidate of each fixture (the one the FINAL reuses) against transcripts.json.

python -m bench.agreed_prefix_check [--reps 5] [--names weather_paris,timer]
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soxr

from bench.fixtures import load_utterances
from bench.stats import corpus_wer
from stt_service.endpointing import Action, ActionKind, EndpointConfig, UtteranceTracker
from stt_service.engine import SAMPLE_RATE, Transcript
from stt_service.recognizer import pcm16_to_float
from stt_service.vad import SileroVad

BENCH_DIR = Path(__file__).resolve().parent


def word_starts(tokens: Sequence[int], starts_word: Callable[[int], bool]) -> list[int]:
    """Indices of the tokens that begin a word (the first token always does)."""
    return [i for i, t in enumerate(tokens) if i == 0 or starts_word(t)]


def agreed_prefix(hypotheses: Sequence[Sequence[int]], starts_word: Callable[[int], bool]) -> list[int]:
    """The tokens the last two hypotheses agree on, minus the last word of that agreement.

    Nothing with fewer than two hypotheses. The common prefix stops at the first token they
    disagree on; the word it stops in (or the last complete word, which more audio may still
    change: "today" -> "today?") is dropped, so only whole words agreed by both are kept.
    """
    if len(hypotheses) < 2:
        return []
    a, b = hypotheses[-2], hypotheses[-1]
    common = 0
    while common < min(len(a), len(b)) and a[common] == b[common]:
        common += 1
    starts = word_starts(a[:common], starts_word)
    return list(a[: starts[-1]]) if starts else []


def first_words(tokens: Sequence[int], words: int, starts_word: Callable[[int], bool]) -> list[int]:
    """The tokens of the first `words` words (words < 0: all but the last -words)."""
    starts = [*word_starts(tokens, starts_word), len(tokens)]
    count = len(starts) - 1
    keep = max(0, min(count, words if words >= 0 else count + words))
    return list(tokens[: starts[keep]])


@dataclass
class Candidate:
    fixture: str
    utterance: int
    candidate_id: int
    audio: np.ndarray
    interims: list[tuple[int, ...]]
    decoded: Transcript
    committed: bool  # a long utterance was split (never forced)


def simulate(engine: Any, vad: SileroVad, name: str, audio: np.ndarray, config: EndpointConfig) -> list[Candidate]:
    """Every candidate decode of `audio` as the recognizer would start it, with the interims before it."""
    tracker = UtteranceTracker(config)
    interims: dict[int, list[tuple[int, ...]]] = {}
    committed: set[int] = set()
    out: list[Candidate] = []

    def handle(actions: list[Action]) -> None:
        for a in actions:
            if a.kind is ActionKind.DECODE_INTERIM:
                interims.setdefault(a.utterance, []).append(engine.transcribe(audio[a.start : a.end], "en").tokens)
            elif a.kind is ActionKind.DECODE_COMMIT:
                committed.add(a.utterance)
            elif a.kind is ActionKind.DECODE_CANDIDATE:
                window = audio[a.start : a.end].copy()
                decoded = engine.transcribe(window, "en")
                seen = list(interims.get(a.utterance, []))
                out.append(
                    Candidate(name, a.utterance, a.candidate_id, window, seen, decoded, a.utterance in committed)
                )
                handle(tracker.on_candidate(a.candidate_id, decoded.text))

    for prob in vad.stream().push(audio):
        handle(tracker.step(float(prob)))
    return out


def time_variants(
    engine: Any, audio: np.ndarray, variants: dict[str, list[int]], reps: int
) -> dict[str, tuple[float, Transcript]]:
    """Median decode ms and the result of each forced prefix, repetitions interleaved across variants."""
    times: dict[str, list[float]] = {k: [] for k in variants}
    results: dict[str, Transcript] = {}
    for _ in range(reps):
        for key, prefix in variants.items():
            result = engine.transcribe(audio, "en", prefix_tokens=prefix)
            times[key].append(result.decode_ms)
            results[key] = result
    return {k: (statistics.median(times[k]), results[k]) for k in variants}


def run(reps: int, names: list[str] | None) -> dict[str, Any]:
    from stt_service.backends import bundled_model_dir
    from stt_service.ct2_engine import FasterWhisperEngine

    engine = FasterWhisperEngine(str(bundled_model_dir()), threads=1)
    vad = SileroVad()
    config = EndpointConfig(interim=True, hints=True)
    cache: dict[int, bool] = {}

    def starts_word(token: int) -> bool:
        if token not in cache:
            cache[token] = engine.token_text(token, "en").startswith(" ")
        return cache[token]

    engine.transcribe(np.zeros(SAMPLE_RATE, dtype=np.float32), "en")  # warm-up
    rows: list[dict[str, Any]] = []
    for utt in load_utterances(min_ms=0, max_ms=60_000, names=names):
        audio = pcm16_to_float(utt.pcm)
        if utt.sample_rate_hz != SAMPLE_RATE:
            audio = soxr.resample(audio, utt.sample_rate_hz, SAMPLE_RATE).astype(np.float32)
        candidates = simulate(engine, vad, utt.name, audio, config)
        for i, cand in enumerate(candidates):
            own = list(cand.decoded.tokens)
            agreed = [] if cand.committed else agreed_prefix(cand.interims, starts_word)
            words = len(word_starts(own, starts_word))
            variants = {
                "none": [],
                "agreed": agreed,
                "half": first_words(own, words // 2, starts_word),
                "all_but_2": first_words(own, -2, starts_word),
            }
            timed = time_variants(engine, cand.audio, variants, reps)
            row = {
                "fixture": cand.fixture,
                "reference": utt.text,
                "candidate": i + 1,
                "last": i == len(candidates) - 1,
                "audio_ms": round(len(cand.audio) * 1000 / SAMPLE_RATE),
                "interims": len(cand.interims),
                "tokens": len(own),
                **{f"{k}_forced": len(v) for k, v in variants.items() if k != "none"},
                **{f"{k}_ms": round(ms, 1) for k, (ms, _) in timed.items()},
                **{f"{k}_text": r.text for k, (_, r) in timed.items()},
                **{f"{k}_logprob": round(r.avg_logprob, 3) for k, (_, r) in timed.items()},
            }
            rows.append(row)
            print(
                f"{cand.fixture:20s} c{i + 1} int={row['interims']} tok={len(own):2d} agreed={len(agreed):2d}  "
                f"none {row['none_ms']:6.1f}  agreed {row['agreed_ms']:6.1f}  half {row['half_ms']:6.1f}  "
                f"all-2 {row['all_but_2_ms']:6.1f} ms  same={row['agreed_text'] == row['none_text']}  "
                f"{row['none_text']!r}",
                flush=True,
            )
    return {"reps": reps, "rows": rows, "summary": summarize(rows)}


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    forced = [r for r in rows if r["agreed_forced"]]

    def median(values: list[float]) -> float | None:
        return round(statistics.median(values), 1) if values else None

    def saved(subset: list[dict[str, Any]], key: str = "agreed") -> float | None:
        return median([r["none_ms"] - r[f"{key}_ms"] for r in subset])

    finals = [r for r in rows if r["last"]]
    return {
        "candidates": len(rows),
        "with_agreed_prefix": len(forced),
        "agreed_tokens_of_candidate_tokens": [sum(r["agreed_forced"] for r in rows), sum(r["tokens"] for r in rows)],
        "identical_text_agreed": sum(r["agreed_text"] == r["none_text"] for r in forced),
        "ms_median": {k: median([r[f"{k}_ms"] for r in rows]) for k in ("none", "agreed", "half", "all_but_2")},
        # Paired (same candidate, runs interleaved): none_ms - forced ms.
        "saved_ms_median_where_forced": saved(forced),
        "saved_ms_median_10_or_more_forced": saved([r for r in forced if r["agreed_forced"] >= 10]),
        "saved_ms_median_all_but_2": saved(rows, "all_but_2"),
        # The same decode twice (nothing agreed): the machine's noise on a paired difference.
        "noise_ms_median_abs_nothing_forced": median(
            [abs(r["none_ms"] - r["agreed_ms"]) for r in rows if not r["agreed_forced"]]
        ),
        "wer_last_candidate": {
            k: corpus_wer((r["reference"], r[f"{k}_text"]) for r in finals) for k in ("none", "agreed")
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=5, help="decodes per variant (median)")
    parser.add_argument("--names", default="", help="comma-separated fixture names (default: all single utterances)")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "agreed_prefix_check.json")
    args = parser.parse_args()
    result = run(args.reps, [n for n in args.names.split(",") if n] or None)
    print(json.dumps(result["summary"], indent=1))
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
