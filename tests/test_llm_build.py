"""The llama.cpp build that `make setup` installs runs on this CPU and on any other of its kind.

A native build on an Intel AVX-512/AMX CPU segfaulted on the first generation (issue 13); these
tests generate for real on every bundled GGUF with the installed wheel, and check that the wheel
was built for a named instruction set this CPU has (AVX2, or AVX-512 where present), never AMX.
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


# llama.cpp's name for an instruction set -> the /proc/cpuinfo flags it needs.
CPU_FLAGS_OF = {
    "AVX": {"avx"},
    "AVX2": {"avx2"},
    "FMA": {"fma"},
    "F16C": {"f16c"},
    "BMI2": {"bmi2"},
    "AVX512": {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"},
    "AVX512_VBMI": {"avx512vbmi"},
    "AVX512_VNNI": {"avx512_vnni"},
    "AVX512_BF16": {"avx512_bf16"},
}


def _cpu_flags() -> set[str]:
    with open("/proc/cpuinfo") as cpuinfo:
        return {flag for line in cpuinfo if line.startswith("flags") for flag in line.split(":", 1)[1].split()}


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the targets are defined for x86-64")
def test_the_installed_wheel_uses_only_instructions_this_cpu_has_and_its_avx512_but_never_amx() -> None:
    import llama_cpp

    features = llama_cpp.llama_print_system_info().decode()
    enabled = {name for name in CPU_FLAGS_OF if f" {name} = 1 " in f" {features} "}
    cpu = _cpu_flags()
    for name in enabled:
        assert CPU_FLAGS_OF[name] <= cpu, f"the wheel uses {name}, which this CPU lacks: {features}"
    assert "AMX_INT8 = 1" not in features, f"AMX leaked into the wheel (issue 13): {features}"
    assert "AVX_VNNI = 1" not in features, f"a native build leaked into the wheel: {features}"
    if CPU_FLAGS_OF["AVX512"] <= cpu:  # prompts read ~1.5x faster with it (scripts/llama_wheel.sh)
        assert "AVX512" in enabled, f"this CPU has AVX-512 but the wheel does not use it: {features}"
