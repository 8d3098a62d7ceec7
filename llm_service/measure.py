"""Measurements behind the defaults (python -m llm_service.measure --model qwen2.5-0.5b [--busy]).

Prints load time, RSS, warm-up, ttft of turn 1 (with / without the cached system prompt) and
turn 2, tokens/s, KV state save/load cost and the replies to five spoken-assistant questions.
`--busy` runs a CPU busy loop in another process meanwhile (as STT/TTS would during a turn).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import statistics
import time

from llm_service.__main__ import DEFAULT_SYSTEM_PROMPT
from llm_service.engine import Message, Sampling
from llm_service.llama_engine import EngineConfig, LlamaCppEngine
from llm_service.models import resolve_model

QUESTIONS = [
    "What is the capital of France?",
    "How many minutes are there in two hours?",
    "Can you suggest something quick for dinner tonight?",
    "Why is the sky blue?",
    "What should I wear if it is cold and rainy outside?",
]


def _busy(stop: multiprocessing.synchronize.Event, parent: int) -> None:  # type: ignore[name-defined]
    x = 0
    while not stop.is_set() and os.getppid() == parent:  # never outlive the measuring process
        for _ in range(100_000):
            x += 1


def _turn(
    engine: LlamaCppEngine, messages: list[Message], key: str | None, max_tokens: int = 60
) -> dict[str, float | str]:
    started = time.perf_counter()
    result = engine.generate(messages, max_tokens, Sampling(temperature=0.0), key, lambda _t: None, lambda: False)
    first = result.first_token_at or result.ended_at
    tps = (result.completion_tokens - 1) / (result.ended_at - first) if result.completion_tokens > 1 else 0.0
    return {
        "ttft_ms": (first - started) * 1000,
        "tps": tps,
        "prompt": result.prompt_tokens,
        "cached": result.cached_prompt_tokens,
        "n": result.completion_tokens,
        "text": result.text,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="qwen2.5-0.5b")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--threads-batch", type=int, default=0)
    parser.add_argument("--n-ctx", type=int, default=32768)
    parser.add_argument("--busy", action="store_true", help="run a CPU busy loop in another process")
    parser.add_argument("--quality", action="store_true", help="print replies to 5 questions")
    parser.add_argument("--questions", type=int, default=len(QUESTIONS), help="how many of the 5 questions")
    args = parser.parse_args()
    stop = multiprocessing.Event()
    busy = multiprocessing.Process(target=_busy, args=(stop, os.getpid()), daemon=True) if args.busy else None
    if busy:
        busy.start()
    try:
        name, path = resolve_model(args.model)
        t = time.perf_counter()
        engine = LlamaCppEngine(
            EngineConfig(
                name,
                path,
                n_ctx=args.n_ctx,
                threads=args.threads,
                threads_batch=args.threads_batch,
                system_prompt=DEFAULT_SYSTEM_PROMPT,
            )
        )
        load_s = time.perf_counter() - t
        warm_s = engine.warm_up()
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(
            f"model={name} threads={args.threads}/{args.threads_batch or args.threads} busy={args.busy} n_ctx={engine.n_ctx} load={load_s:.2f}s warmup={warm_s:.2f}s rss={rss:.0f}MiB"
        )
        system = Message("system", DEFAULT_SYSTEM_PROMPT)
        turn1, turn2, nocache, tps = [], [], [], []
        for i, q in enumerate(QUESTIONS[: args.questions]):
            key = f"s{i}-{args.threads}-{args.busy}"
            r1 = _turn(engine, [system, Message("user", q)], key)
            follow = [
                system,
                Message("user", q),
                Message("assistant", str(r1["text"])),
                Message("user", "Thanks. Say that again in fewer words."),
            ]
            r2 = _turn(engine, follow, key)
            turn1.append(float(r1["ttft_ms"]))
            turn2.append(float(r2["ttft_ms"]))
            tps += [float(r1["tps"]), float(r2["tps"])]
            if args.quality:
                print(
                    f"  Q: {q}\n  A: {r1['text']!r}  (ttft {r1['ttft_ms']:.0f} ms, prompt {r1['prompt']}, cached {r1['cached']})"
                )
                print(
                    f"  A2: {r2['text']!r}  (ttft {r2['ttft_ms']:.0f} ms, prompt {r2['prompt']}, cached {r2['cached']})"
                )
        # Back to the first session after the others: its saved KV state is restored.
        back_key = f"s0-{args.threads}-{args.busy}"
        first_q = [system, Message("user", QUESTIONS[0])]
        r0 = _turn(engine, first_q, back_key)
        r3 = _turn(
            engine, [*first_q, Message("assistant", str(r0["text"])), Message("user", "And of Italy?")], back_key
        )
        print(f"switch back to session 1: ttft {r3['ttft_ms']:.0f} ms, prompt {r3['prompt']}, cached {r3['cached']}")
        # No cache: a system prompt the engine has never seen, fresh context each time.
        for i, q in enumerate(QUESTIONS[: args.questions]):
            engine.kv.reset()
            other = Message("system", f"Variant {i}. " + DEFAULT_SYSTEM_PROMPT)
            nocache.append(float(_turn(engine, [other, Message("user", q)], None)["ttft_ms"]))
        med = statistics.median
        print(
            f"ttft turn1 (system prefix cached) median {med(turn1):.0f} ms; turn2 median {med(turn2):.0f} ms; "
            f"turn1 without cache median {med(nocache):.0f} ms; tok/s median {med(tps):.1f}"
        )
        if engine.kv.state_save_ms:
            print(
                f"KV state save median {med(engine.kv.state_save_ms):.2f} ms, load median "
                f"{med(engine.kv.state_load_ms) if engine.kv.state_load_ms else 0:.2f} ms"
            )
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak rss {rss:.0f} MiB")
    finally:
        stop.set()
        if busy:
            busy.join(5)


if __name__ == "__main__":
    main()
