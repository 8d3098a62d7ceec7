"""The re-quantized preset (llm_service/requantize.py) is derived once, again only when its source
changes, never left half-written, and a bad source is named in the error. The derived Qwen
answering for real is in test_llm_build (every preset)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from llm_service.models import resolve_model
from llm_service.requantize import RequantizeError, derive

pytestmark = pytest.mark.real


def _file_type(path: Path) -> str:
    """general.file_type of a GGUF (a llama_ftype number), read by llama.cpp's own loader."""
    from llama_cpp import Llama

    llm = Llama(str(path), vocab_only=True, verbose=False)
    try:
        return str(llm.metadata.get("general.file_type", ""))
    finally:
        llm.close()


@pytest.fixture
def small_source(tmp_path: Path) -> Path:
    """A copy of the bundled SmolLM2 GGUF (98 MB, Q4_1) whose mtime the test may change."""
    copy = tmp_path / "source.gguf"
    shutil.copyfile(resolve_model("smollm2-135m")[1], copy)
    return copy


def test_derives_a_q4_0_file_once_and_again_when_the_source_changes(small_source: Path, tmp_path: Path) -> None:
    target = tmp_path / "cache" / "derived.gguf"
    assert derive(small_source, target) == target
    first = target.stat().st_mtime_ns
    assert target.read_bytes()[:4] == b"GGUF"
    import llama_cpp

    assert _file_type(target) == str(llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0)

    derive(small_source, target)
    assert target.stat().st_mtime_ns == first, "derived again although the source did not change"

    stat = small_source.stat()
    os.utime(small_source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    derive(small_source, target)
    assert target.stat().st_mtime_ns != first, "the source changed but the old derived file was kept"
    assert [p.name for p in target.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_a_source_that_is_not_a_model_fails_with_its_name_and_leaves_nothing(tmp_path: Path) -> None:
    source = tmp_path / "notes.gguf"
    source.write_bytes(b"GGUF but not really a model" * 100)
    target = tmp_path / "cache" / "derived.gguf"
    with pytest.raises(RequantizeError, match=r"notes\.gguf"):
        derive(source, target)
    assert not target.exists()
    assert sorted(p.name for p in target.parent.iterdir()) == []
