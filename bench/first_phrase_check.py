"""First-phrase check (issue 15): an objective stand-in for listening to the TTS first-phrase cut.

Nobody on the team can listen, so each reply is rendered by Piper two ways and measured:
  A  as the TTS service does it: segments with the service's default limits (a short first
     phrase or clause, then sentences), each synthesized alone, audio concatenated in order;
  B  sentence by sentence, no first-phrase or first-clause cut.
Measured: tiny.en's word errors on A and B against the reply as the TTS speaks it (numbers as
words), on the first sentence (the only place A and B differ) and on the whole reply; B2 = B's
first sentence rendered once more (Piper samples noise, so B vs B2 is the floor of chance
differences). At each cut A makes in the first sentence (after an opener such as "Sure,", a
first phrase, or a first clause): the silence A leaves (trailing silence of the segment + leading
silence of the next, frames below -35 dB of the loudest) vs the longest silence in B within
±150 ms of the same point (placed by A's share of speech time), the pitch movement over the last
200 ms before it (autocorrelation F0, semitones against the segment's median; negative = falls),
and whether tiny.en wrote punctuation there (a boundary it heard). Measurements: speech_measure.py.
It does not replace a listening check: it cannot judge naturalness or intonation by ear.

python -m bench.first_phrase_check     # agent replies of bench/results.json + hand-written ones
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import soxr

from bench.speech_measure import (
    FRAME_S,
    NEAR_S,
    SILENCE_DB,
    edge_silence_s,
    frame_levels,
    inner_pauses,
    mark_after,
    pause_near,
    pitch_fall_st,
    silent,
)
from bench.stats import edit_distance, normalize_words, summarize
from stt_service.engine import SAMPLE_RATE, SpeechEngine
from tts_service.engine import LoadedVoice
from tts_service.segmenter import Segment, is_opener, split_sentences
from tts_service.servicer import Limits
from tts_service.text_cleaning import clean_text

BENCH_DIR = Path(__file__).resolve().parent
HAND_WRITTEN = [
    "Sure, here is a simple recipe for pancakes.",
    "Sure! I can help you with that.",
    "The Moon is about three hundred thousand kilometers away from the Earth.",
    "The distance between the Earth and the Moon changes a little over the month, because the orbit of "
    "the Moon is not a perfect circle but a slightly stretched ellipse.",
    "I think we should go for a walk in the park this afternoon.",
    "Okay, I have set a timer for ten minutes.",
]


def agent_replies(results: Path) -> list[str]:
    """The replies the agent spoke in the streaming turns of a bench run, each once."""
    turns = json.loads(results.read_text(encoding="utf-8")).get("turns", [])
    replies = [t["reply"].strip() for t in turns if t.get("mode") == "streaming" and t.get("reply", "").strip()]
    return list(dict.fromkeys(replies))


def render(voice: LoadedVoice, segments: list[Segment]) -> list[np.ndarray]:
    """Each segment synthesized alone, as the TTS service does (text cleaning included)."""
    return [np.frombuffer(voice.synthesize_blocking(s.text, continues=s.continues).pcm, dtype="<i2") for s in segments]


def word_errors(engine: SpeechEngine, audio: np.ndarray, rate: int, reference: str) -> tuple[int, int, str]:
    """(errors, reference words, transcript) of tiny.en on `audio` against the TTS-normalized reference."""
    heard = engine.transcribe(soxr.resample(audio.astype(np.float32) / 32768, rate, SAMPLE_RATE), "en").text
    ref = normalize_words(clean_text(reference))
    return edit_distance(ref, normalize_words(heard)), len(ref), heard


def check_reply(voice: LoadedVoice, engine: SpeechEngine, text: str, limits: Limits) -> dict[str, Any]:
    rate = voice.info.sample_rate_hz
    common = {"long_clause_chars": limits.long_clause_chars, "max_chars": limits.max_segment_chars}
    a_segs = split_sentences(
        text, first_clause_chars=limits.first_clause_chars, first_phrase_words=limits.first_phrase_words, **common
    )
    b_segs = split_sentences(text, first_clause_chars=10**6, first_phrase_words=0, **common)
    a, b = render(voice, a_segs), render(voice, b_segs)
    # A's segments grouped by the B sentence they start in (A only adds boundaries to B's).
    groups: list[list[np.ndarray]] = [[] for _ in b_segs]
    for seg, audio in zip(a_segs, a, strict=True):
        groups[max(j for j, s in enumerate(b_segs) if s.start <= seg.start)].append(audio)
    errs = {"a": 0, "b": 0, "words": 0}
    first: dict[str, Any] = {}
    for j, seg in enumerate(b_segs):
        ea, n, heard_a = word_errors(engine, np.concatenate(groups[j]), rate, seg.text)
        eb, _, heard_b = word_errors(engine, b[j], rate, seg.text)
        errs["a"] += ea
        errs["b"] += eb
        errs["words"] += n
        if j == 0:
            eb2, _, _ = word_errors(engine, render(voice, [seg])[0], rate, seg.text)
            first = {
                "text": seg.text,
                "words": n,
                "errors_a": ea,
                "errors_b": eb,
                "errors_b2": eb2,
                "heard_a": heard_a,
                "heard_b": heard_b,
            }
    row: dict[str, Any] = {"reply": text, "first_segment": a_segs[0].text, "first_sentence": first, "whole": errs}
    row["opener"] = is_opener(a_segs[0].text)
    loud_a = max(float(frame_levels(x, rate).max(initial=0)) for x in a)
    loud_b = max(float(frame_levels(x, rate).max(initial=0)) for x in b)
    mb = silent(frame_levels(b[0], rate), loud_b)
    row["b_inner_pauses_ms"] = [round((e - s) * 1000) for s, e in inner_pauses(mb)]
    if len(b) > 1:
        row["sentence_pause_ms"] = round(
            (edge_silence_s(mb)[1] + edge_silence_s(silent(frame_levels(b[1], rate), loud_b))[0]) * 1000
        )
    row["cuts"] = cuts_of(a_segs[: len(groups[0])], groups[0], b[0], mb, loud_a, first, rate)
    return row


def cuts_of(
    segs: list[Segment],
    audio: list[np.ndarray],
    b0: np.ndarray,
    mb: np.ndarray,
    loud_a: float,
    first: dict[str, Any],
    rate: int,
) -> list[dict[str, Any]]:
    """Each boundary A puts inside the first sentence: the silence and pitch fall there in A and in B."""
    masks = [silent(frame_levels(x, rate), loud_a) for x in audio]
    edges = [edge_silence_s(m) for m in masks]
    speech = [len(m) * FRAME_S - lead - trail for m, (lead, trail) in zip(masks, edges, strict=True)]
    lead_b, trail_b = edge_silence_s(mb)
    cuts = []
    for k, seg in enumerate(segs[:-1]):
        t_b = lead_b + sum(speech[: k + 1]) / sum(speech) * (len(mb) * FRAME_S - lead_b - trail_b)
        said = " ".join(s.text for s in segs[: k + 1])
        words = len(normalize_words(clean_text(said)))
        kind = "opener" if is_opener(seg.text) else "clause" if seg.text[-1] in ",;:" else "phrase"
        cuts.append(
            {
                "after": seg.text,
                "words": words,
                "kind": kind,
                "pause_a_ms": round((edges[k][1] + edges[k + 1][0]) * 1000),
                "pause_b_ms": round(pause_near(inner_pauses(mb), t_b) * 1000),
                "fall_a_st": pitch_fall_st(audio[k], rate, edges[k][0], edges[k][0] + speech[k]),
                "fall_b_st": pitch_fall_st(b0, rate, lead_b, t_b),
            }
            | {f"mark_{x}": mark_after(first[f"heard_{x}"], clean_text(first["text"]), words) for x in "ab"}
        )
    return cuts


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    cut = [r for r in rows if r["cuts"]]
    cuts = [c for r in rows for c in r["cuts"]]

    def wer(rs: list[dict[str, Any]], part: str, key: str) -> float | None:
        words = sum(r[part]["words"] for r in rs)
        return round(sum(r[part][key] for r in rs) / words, 4) if words else None

    out: dict[str, Any] = {
        "replies": len(rows),
        "replies_cut": len(cut),
        "cuts": len(cuts),
        "openers_first_segment": [r["first_segment"] for r in rows if r["opener"]],
        "wer_first_sentence_cut": {k: wer(cut, "first_sentence", f"errors_{k}") for k in ("a", "b", "b2")},
        "words_first_sentence_cut": sum(r["first_sentence"]["words"] for r in cut),
        "wer_whole": {k: wer(rows, "whole", k) for k in ("a", "b")},
        "words_whole": sum(r["whole"]["words"] for r in rows),
        "b_inner_pause_ms": summarize(p for r in rows for p in r["b_inner_pauses_ms"]),
        "b_comma_pause_ms": summarize(
            max(r["b_inner_pauses_ms"], default=0) for r in rows if "," in r["first_sentence"]["text"]
        ),
        "sentence_pause_ms": summarize(r["sentence_pause_ms"] for r in rows if "sentence_pause_ms" in r),
    }
    for kind in ("opener", "phrase", "clause"):
        cs = [c for c in cuts if c["kind"] == kind]
        keys = ("words", "pause_a_ms", "pause_b_ms", "fall_a_st", "fall_b_st")
        out[kind] = {"n": len(cs)} | {k: summarize(c[k] for c in cs) for k in keys}
        for x in ("a", "b"):
            marks = [c[f"mark_{x}"] for c in cs if c[f"mark_{x}"] is not None]
            out[kind][f"heard_mark_{x}"] = f"{sum(marks)} of {len(marks)}"
    return out


def table(rows: list[dict[str, Any]]) -> str:
    """One line per cut (or per reply without one): silence and pitch fall in A and B there, marks heard."""
    head = f"{'segment before the cut (A)':<38} {'cut':>5} {'pauseA':>6} {'pauseB':>6} {'fallA':>6} {'fallB':>6} mark"
    lines = [head + "  errors 1st sentence A/B/B2"]
    for r in rows:
        f = r["first_sentence"]
        errs = f"{f['errors_a']}/{f['errors_b']}/{f['errors_b2']} of {f['words']}"
        for i, c in enumerate(r["cuts"] or [{"after": r["first_segment"]}]):
            cut = f"{c['words']}w {c['kind'][0]}" if "kind" in c else "-"
            cells = [c.get(k) for k in ("pause_a_ms", "pause_b_ms", "fall_a_st", "fall_b_st")]
            shown = " ".join(f"{'' if v is None else v:>6}" for v in cells)
            marks = "".join({True: ",", False: "_", None: "?"}[c[f"mark_{x}"]] for x in "ab") if "kind" in c else ""
            lines.append(f"{c['after'][:38]:<38} {cut:>5} {shown} {marks:>4}  {errs if i == 0 else ''}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    from stt_service.backends import create_engine
    from stt_service.engine import Backend
    from tts_service.piper_voice import PiperVoiceModel, default_piper_voice

    p = argparse.ArgumentParser(prog="python -m bench.first_phrase_check", description=__doc__)
    p.add_argument("--results", type=Path, default=BENCH_DIR / "results.json", help="bench run to take replies from")
    p.add_argument("--out", type=Path, default=BENCH_DIR / "first_phrase_check.json", help="JSON written here")
    args = p.parse_args(argv)
    limits = Limits()
    texts = agent_replies(args.results) + HAND_WRITTEN
    voice = LoadedVoice(PiperVoiceModel(default_piper_voice(), threads=1))
    engine = create_engine(Backend.FASTER_WHISPER, "", threads=1)
    try:
        rows = []
        for i, text in enumerate(texts, 1):
            rows.append(check_reply(voice, engine, text, limits))
            print(f"[{i}/{len(texts)}] {text[:60]!r}", flush=True)
    finally:
        voice.close()
    config = {
        "first_phrase_words": limits.first_phrase_words,
        "first_clause_chars": limits.first_clause_chars,
        "silence_db": SILENCE_DB,
        "near_s": NEAR_S,
        "voice": voice.info.name,
        "stt": engine.model_name,
    }
    result = {"config": config, "summary": summary(rows), "replies": rows}
    print(table(rows))
    print(json.dumps(result["summary"], indent=1))
    args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
