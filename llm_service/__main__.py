"""Streaming LLM with server-kept conversation sessions (llama.cpp, GGUF chat templates): voice.llm.v1."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping
from typing import Any

import grpc

from llm_service.engine import Backend, LanguageEngine, Sampling
from llm_service.llama_engine import EngineConfig, LlamaCppEngine
from llm_service.models import DEFAULT_PRESET, PRESETS, resolve_model
from llm_service.servicer import SERVICE_NAME, LanguageModelServicer, ServiceConfig
from llm_service.thread_burst import BurstPolicy
from llm_service.validation import TEMPERATURE, Limits
from service_runtime import Admission, EngineSlot, EnvFlags, ServiceSpec
from service_runtime.config import float_in, int_at_least
from voice.llm.v1 import llm_pb2_grpc

log = logging.getLogger("llm-service")

DEFAULT_SYSTEM_PROMPT = (
    "You are a friendly voice assistant. Your replies are spoken aloud, so answer in one to three "
    "short, plain sentences. Never use markdown, lists, headings, code, emoji or special symbols. "
    "Write numbers and units the way people say them. If you are unsure, say so briefly."
)
# Measured on the 2-core box with a competing CPU load (see README).
DEFAULT_THREADS = 1
DEFAULT_THREADS_BATCH = 0
# The start of a reply on the idle second core (llm_service/thread_burst.py): off by default, since
# with 2+ conversations at once it raised dead air p95 (bench/RESULTS.md); `--burst-threads 2` turns it on.
DEFAULT_BURST_THREADS = 0
DEFAULT_BURST_TOKENS = 6
DEFAULT_MAX_TOKENS = 200


def add_arguments(flags: EnvFlags) -> None:
    flags.add("--backend", Backend.LLAMA_CPP.value, "inference backend", choices=[b.value for b in Backend])
    flags.add("--model", DEFAULT_PRESET, f"preset ({', '.join(PRESETS)}) or a GGUF path")
    flags.add("--n-ctx", 32768, "context window, clamped to the model's", type=int_at_least(1))
    flags.add("--threads", DEFAULT_THREADS, "CPU threads", type=int_at_least(1))
    flags.add(
        "--threads-batch", DEFAULT_THREADS_BATCH, "CPU threads for reading prompts, 0 = --threads", type=int_at_least(0)
    )
    flags.add(
        "--burst-threads",
        DEFAULT_BURST_THREADS,
        "threads for the prompt's tail and the first tokens of a reply when the rest of the machine is idle, "
        "0 = never (more than --threads to have an effect)",
        type=int_at_least(0),
    )
    flags.add("--burst-tokens", DEFAULT_BURST_TOKENS, "reply tokens decoded with --burst-threads", type=int_at_least(1))
    flags.add("--system-prompt", DEFAULT_SYSTEM_PROMPT, "system prompt added when a conversation has none")
    flags.add("--max-tokens-limit", 512, "largest max_tokens a request may ask for", type=int_at_least(1))
    flags.add(
        "--default-max-tokens",
        None,
        f"max_tokens=0 means this (default {DEFAULT_MAX_TOKENS}, or --max-tokens-limit when that is lower)",
        type=int_at_least(1),
    )
    flags.add("--temperature", 0.7, "default sampling temperature", type=float_in(*TEMPERATURE))
    flags.add(
        "--max-queue", 4, "Generate calls waiting for the model; beyond: RESOURCE_EXHAUSTED", type=int_at_least(0)
    )
    flags.add(
        "--max-sessions", 32, "server-kept conversations (least recently used idle one evicted)", type=int_at_least(1)
    )
    flags.add("--session-ttl-s", 900.0, "idle seconds before a session expires", type=float_in(0, low_open=True))


def check_arguments(args: argparse.Namespace) -> None:
    """--default-max-tokens: not above --max-tokens-limit when given; when not, the smaller of the two."""
    if args.default_max_tokens is None:
        args.default_max_tokens = min(DEFAULT_MAX_TOKENS, args.max_tokens_limit)
    elif args.default_max_tokens > args.max_tokens_limit:
        raise ValueError(
            f"--default-max-tokens {args.default_max_tokens} is above --max-tokens-limit {args.max_tokens_limit}; "
            f"allowed: 1 to {args.max_tokens_limit}"
        )


def create(args: argparse.Namespace, server: grpc.aio.Server, admission: Admission) -> Any:
    slot: EngineSlot[LanguageEngine] = EngineSlot("llm-service")
    config = ServiceConfig(
        system_prompt=args.system_prompt,
        limits=Limits(default_max_tokens=args.default_max_tokens, max_tokens_limit=args.max_tokens_limit),
        sampling=Sampling(temperature=args.temperature),
        session_ttl_s=args.session_ttl_s,
        max_sessions=args.max_sessions,
        max_queue=args.max_queue,
    )
    servicer = LanguageModelServicer(slot, config, admission)
    llm_pb2_grpc.add_LanguageModelServicer_to_server(servicer, server)

    def load() -> Mapping[str, Any]:
        name, path = resolve_model(args.model)
        log.info(
            "loading backend=%s model=%s path=%s n_ctx=%d threads=%d system_prompt_chars=%d",
            args.backend, name, path, args.n_ctx, args.threads, len(args.system_prompt),
        )  # fmt: skip
        engine = LlamaCppEngine(
            EngineConfig(
                model_name=name,
                model_path=path,
                n_ctx=args.n_ctx,
                threads=args.threads,
                threads_batch=args.threads_batch,
                system_prompt=args.system_prompt,
                max_saved_states=args.max_sessions,
                burst=BurstPolicy(threads=args.burst_threads, tokens=args.burst_tokens),
            )
        )
        warm_s = servicer.worker.run_sync(engine.warm_up)
        slot.set(engine)
        info: dict[str, Any] = {"backend": args.backend, "model": name, "path": path, "n_ctx": engine.n_ctx}
        if engine.n_ctx != engine.n_ctx_requested:
            info["n_ctx_requested"] = engine.n_ctx_requested
            info["n_ctx_train"] = engine.n_ctx_train
        return {
            **info,
            "threads": args.threads,
            "threads_batch": engine.threads_batch,
            "burst_threads": args.burst_threads if engine.burst.enabled else 0,
            "system_prompt_chars": len(args.system_prompt),
            "model_load_s": f"{engine.load_s:.2f}",
            "warmup_s": f"{warm_s:.2f}",
        }

    return load


SPEC = ServiceSpec("llm", [SERVICE_NAME], add_arguments, create, __doc__ or "", check_arguments=check_arguments)
main = SPEC.main


if __name__ == "__main__":
    main()
