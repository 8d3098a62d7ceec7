"""The llama.cpp build that `make setup` installs runs on this CPU and on any other of its kind.

A native build on an Intel AVX-512/AMX CPU segfaulted on the first generation (issue 13); these
tests generate for real on every bundled GGUF with the installed wheel, and check that the wheel
was built for the portable target rather than for this machine's CPU.
"""

from __future__ import annotations

import platform

import pytest

from llm_service.models import PRESETS, resolve_model

pytestmark = pytest.mark.real


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_each_bundled_gguf_answers_with_the_installed_build(preset: str) -> None:
    from llama_cpp import Llama

    _, path = resolve_model(preset)
    llm = Llama(str(path), n_ctx=512, n_threads=2, verbose=False, seed=0)
    reply = llm.create_chat_completion(
        [{"role": "user", "content": "What is the capital of France? Answer in one word."}],
        max_tokens=8,
        temperature=0.0,
    )
    text = reply["choices"][0]["message"]["content"] or ""
    assert "paris" in text.lower(), f"{preset} answered {text!r}"


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the portable target is defined for x86-64")
def test_the_installed_wheel_is_built_for_the_portable_x86_target_not_this_cpu() -> None:
    import llama_cpp

    features = llama_cpp.llama_print_system_info().decode()
    assert "AVX2 = 1" in features or "SSE3 = 1" in features, features
    for machine_specific in ("AVX512", "AMX", "AVX_VNNI"):
        assert f"{machine_specific} = 1" not in features, f"native build leaked into the wheel: {features}"
