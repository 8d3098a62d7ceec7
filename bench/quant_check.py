"""How far a re-quantized model is from the bundled one, and how much faster (evidence for
llm_service/requantize.py; the bench's `--compare-llm-model` measures the dead air).

    python -m bench.quant_check [--model qwen2.5-0.5b-q4_0] [--reference qwen2.5-0.5b]

Both models on the same prompts, one at a time, on this machine:
* speed: one-token decode rate and an 8-token batch (the prompt tail at the candidate), 1 thread;
* replies: greedy (temperature 0) replies to the fixtures' transcripts and to a few open questions,
  how many are identical, and the pairs that differ;
* next-token distributions: KL divergence from the reference and top-1 agreement, teacher-forced
  on the reference's replies (the measure llama.cpp's `perplexity --kl-divergence` reports);
* end of turn: the end-of-turn score of every candidate text in
  tests/fixtures/end_of_turn_candidates.json, and what the STT's endpoint policy would decide with
  each model's scores (premature / late fixtures, bench.endpoint_replay).
Writes bench/quant_check.json.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.endpoint_replay import CANDIDATE_MS, DATA, evaluate
from llm_service.__main__ import DEFAULT_SYSTEM_PROMPT
from llm_service.engine import Message, Sampling
from llm_service.llama_engine import EngineConfig, LlamaCppEngine
from llm_service.measure import QUESTIONS
from llm_service.models import resolve_model
from stt_service.endpointing import EndpointConfig

OUT = Path(__file__).resolve().parent / "quant_check.json"
MORE_QUESTIONS = [
    "Tell me a joke about cats.",
    "Who wrote Pride and Prejudice?",
    "What is two plus two?",
    "Translate good morning into French.",
    "What's the tallest mountain in the world?",
    "Give me three tips for running.",
]
REPLY_TOKENS = 60
# Short factual questions with the words a right answer contains (any of them, case-insensitive):
# a crude but objective accuracy figure for the two models' greedy replies.
FACTS: list[tuple[str, tuple[str, ...]]] = [
    ("What is the capital of France?", ("paris",)),
    ("What is the capital of Japan?", ("tokyo",)),
    ("What is the capital of Italy?", ("rome",)),
    ("What is the capital of Canada?", ("ottawa",)),
    ("What is the capital of Australia?", ("canberra",)),
    ("What is the capital of Spain?", ("madrid",)),
    ("What is the capital of Germany?", ("berlin",)),
    ("What is the capital of Egypt?", ("cairo",)),
    ("How many minutes are there in two hours?", ("120", "hundred twenty", "hundred and twenty")),
    ("How many days are there in a week?", ("seven", "7")),
    ("How many legs does a spider have?", ("eight", "8")),
    ("What is five plus seven?", ("twelve", "12")),
    ("What is nine times six?", ("fifty-four", "fifty four", "54")),
    ("What is one hundred minus one?", ("ninety-nine", "ninety nine", "99")),
    ("How many hours are there in a day?", ("24", "twenty-four", "twenty four")),
    ("How many continents are there?", ("seven", "7")),
    ("Who wrote Romeo and Juliet?", ("shakespeare",)),
    ("Who painted the Mona Lisa?", ("leonardo", "da vinci")),
    ("What planet is known as the red planet?", ("mars",)),
    ("What is the largest planet in our solar system?", ("jupiter",)),
    ("What gas do plants take in from the air?", ("carbon dioxide", "co2")),
    ("At what temperature in Celsius does water boil at sea level?", ("100", "hundred")),
    ("At what temperature in Celsius does water freeze?", ("zero", "0 degrees", " 0", "0°")),
    ("What is the largest ocean on Earth?", ("pacific",)),
    ("What is the tallest mountain in the world?", ("everest",)),
    ("Which animal is known as the king of the jungle?", ("lion",)),
    ("What color do you get when you mix blue and yellow?", ("green",)),
    ("How many sides does a triangle have?", ("three", "3")),
    ("What language is spoken in Brazil?", ("portuguese",)),
    ("What is the freezing point of water in Fahrenheit?", ("32", "thirty-two", "thirty two")),
]


def _messages(user: str) -> list[Message]:
    return [Message("system", DEFAULT_SYSTEM_PROMPT), Message("user", user)]


def speed(path: Path, runs: int = 5) -> dict[str, float]:
    """Median decode tokens/s and 8-token batch ms on 1 thread, after a 40-token prompt."""
    from llama_cpp import Llama

    llm = Llama(str(path), n_ctx=2048, n_threads=1, n_threads_batch=1, verbose=False)
    prompt = llm.tokenize(b"A short prompt to fill the cache before the timed part. " * 4, add_bos=False)[:40]
    batch_ms, rates = [], []
    for _ in range(runs):
        llm.reset()
        llm.eval(prompt)
        started = time.perf_counter()
        llm.eval(prompt[:8])
        batch_ms.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        for _ in range(24):
            llm.eval([int(np.argmax(llm.scores[llm.n_tokens - 1]))])
        rates.append(24 / (time.perf_counter() - started))
    llm.close()
    return {"decode_tok_s": round(statistics.median(rates), 1), "batch8_ms": round(statistics.median(batch_ms), 1)}


def replies_and_scores(
    path: Path, prompts: list[str], texts: list[str]
) -> tuple[list[str], list[float], list[list[int]]]:
    """Greedy replies to `prompts`, end-of-turn scores of `texts`, and each prompt's tokens as the
    engine reads them (the GGUF's chat template with the assistant header)."""
    engine = LlamaCppEngine(EngineConfig("m", path, n_ctx=4096, system_prompt=DEFAULT_SYSTEM_PROMPT))
    try:
        engine.warm_up()
        heads = [engine.tokenize_messages(_messages(p)) for p in prompts]
        scores = [engine.prefill(_messages(t), None).end_of_turn_probability for t in texts]
        greedy = Sampling(temperature=0.0)
        replies = [
            engine.generate(_messages(p), REPLY_TOKENS, greedy, None, lambda _d: None, lambda: False).text
            for p in prompts
        ]
    finally:
        engine.close()
    return replies, scores, heads


def log_probs(path: Path, sequences: list[tuple[list[int], int]]) -> list[np.ndarray]:
    """Per sequence (tokens, first reply position): log-softmax rows predicting each reply token."""
    from llama_cpp import Llama

    llm = Llama(str(path), n_ctx=4096, logits_all=True, n_threads=2, verbose=False)
    out = []
    for tokens, start in sequences:
        llm.reset()
        llm.eval(tokens)
        rows = np.array(llm.scores[start - 1 : len(tokens) - 1], dtype=np.float64)
        rows -= rows.max(axis=1, keepdims=True)
        rows -= np.log(np.exp(rows).sum(axis=1, keepdims=True))
        out.append(rows)
    llm.close()
    return out


def teacher_forced(reference: Path, model: Path, heads: list[list[int]], replies: list[str]) -> dict[str, float]:
    """Both models read each prompt (`heads`, token ids) followed by the reference's reply."""
    from llama_cpp import Llama

    vocab = Llama(str(reference), vocab_only=True, verbose=False)
    sequences = [
        (head + vocab.tokenize(reply.encode(), add_bos=False), len(head))
        for head, reply in zip(heads, replies, strict=True)
    ]
    vocab.close()
    ref_rows, model_rows = log_probs(reference, sequences), log_probs(model, sequences)
    kld = np.concatenate([(np.exp(a) * (a - b)).sum(axis=1) for a, b in zip(ref_rows, model_rows, strict=True)])
    top1 = np.concatenate([a.argmax(1) == b.argmax(1) for a, b in zip(ref_rows, model_rows, strict=True)])
    return {
        "tokens": len(kld),
        "kld_mean": round(float(kld.mean()), 4),
        "kld_median": round(float(np.median(kld)), 4),
        "kld_p99": round(float(np.quantile(kld, 0.99)), 4),
        "top1_agreement": round(float(top1.mean()), 4),
    }


def endpoint_decisions(rows: list[dict[str, Any]], keys: list[str]) -> dict[str, dict[str, int]]:
    config = EndpointConfig(hints=True, candidate_ms=CANDIDATE_MS)
    with contextlib.redirect_stdout(io.StringIO()):  # evaluate prints a row per candidate
        return {key: evaluate(rows, key, config) for key in keys}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.quant_check", description=__doc__)
    p.add_argument("--model", default="qwen2.5-0.5b-q4_0", help="preset or GGUF path (default %(default)s)")
    p.add_argument("--reference", default="qwen2.5-0.5b", help="preset or GGUF path (default %(default)s)")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    (ref_name, ref_path), (name, path) = resolve_model(args.reference), resolve_model(args.model)
    rows = json.loads(DATA.read_text())
    texts = sorted({c["text"] for row in rows for c in row["candidates"]})
    prompts = [row["final"] for row in rows if row["final"]] + QUESTIONS + MORE_QUESTIONS
    facts_from = len(prompts)
    prompts += [question for question, _ in FACTS]

    print(f"speed, 1 thread: {ref_name} then {name}", flush=True)
    speeds = {ref_name: speed(ref_path), name: speed(path)}
    print(f"  {speeds}\nreplies and end-of-turn scores ({len(prompts)} prompts, {len(texts)} texts)", flush=True)
    ref_replies, ref_scores, heads = replies_and_scores(ref_path, prompts, texts)
    replies, scores, _ = replies_and_scores(path, prompts, texts)
    print("next-token distributions on the reference's replies", flush=True)
    forced = teacher_forced(ref_path, path, heads, ref_replies)
    by_text = dict(zip(texts, zip(ref_scores, scores, strict=True), strict=True))
    for row in rows:
        for cand in row["candidates"]:
            cand["scores"] = {"reference": by_text[cand["text"]][0], "model": by_text[cand["text"]][1]}
    diffs = [abs(a - b) for a, b in zip(ref_scores, scores, strict=True)]
    identical = sum(a == b for a, b in zip(ref_replies, replies, strict=True))
    correct = {
        label: [
            any(word in reply.lower() for word in words)
            for reply, (_, words) in zip(said[facts_from:], FACTS, strict=True)
        ]
        for label, said in (("reference", ref_replies), ("model", replies))
    }
    policy = endpoint_decisions(rows, ["reference", "model"])
    result: dict[str, Any] = {
        "reference": {"name": ref_name, "path": str(ref_path), "bytes": ref_path.stat().st_size},
        "model": {"name": name, "path": str(path), "bytes": path.stat().st_size},
        "speed_1_thread": speeds,
        "next_token": forced,
        "replies": {
            "prompts": len(prompts),
            "identical": identical,
            "differing": [
                {"prompt": q, "reference": a, "model": b}
                for q, a, b in zip(prompts, ref_replies, replies, strict=True)
                if a != b
            ],
        },
        "facts": {
            "questions": len(FACTS),
            "reference_correct": sum(correct["reference"]),
            "model_correct": sum(correct["model"]),
            "only_reference_right": [
                q for (q, _), a, b in zip(FACTS, correct["reference"], correct["model"], strict=True) if a and not b
            ],
            "only_model_right": [
                q for (q, _), a, b in zip(FACTS, correct["reference"], correct["model"], strict=True) if b and not a
            ],
        },
        "end_of_turn": {
            "texts": len(texts),
            "score_abs_diff_median": round(statistics.median(diffs), 4),
            "score_abs_diff_max": round(max(diffs), 4),
            "largest": sorted(
                ({"text": t, "reference": round(a, 3), "model": round(b, 3)} for t, (a, b) in by_text.items()),
                key=lambda d: -abs(d["reference"] - d["model"]),
            )[:8],
            "policy_fixtures": policy,
        },
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(
        f"decode {speeds[ref_name]['decode_tok_s']} -> {speeds[name]['decode_tok_s']} tok/s, 8-token batch "
        f"{speeds[ref_name]['batch8_ms']} -> {speeds[name]['batch8_ms']} ms\n"
        f"greedy replies identical: {identical} of {len(prompts)}; KLD mean {forced['kld_mean']} "
        f"(p99 {forced['kld_p99']}), top-1 agreement {forced['top1_agreement']:.1%} over {forced['tokens']} tokens\n"
        f"factual questions right: {sum(correct['reference'])} vs {sum(correct['model'])} of {len(FACTS)}\n"
        f"end-of-turn score |diff| median {statistics.median(diffs):.3f} max {max(diffs):.3f}; "
        f"policy on the fixtures: {policy}\n"
        f"-> {args.out}"
    )


if __name__ == "__main__":
    main()
