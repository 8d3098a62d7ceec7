"""Derive a faster GGUF from a bundled one, once, with llama.cpp's own quantizer.

The bundled Qwen2.5-0.5B "Q4_K_M" is mostly Q5_0: its 896-wide rows are not a multiple of the
256-value K-quant blocks, so llama.cpp fell back to Q5_0, which has no repacked x86 kernel. Q4_0
has one (rows interleaved 8 at a time for AVX2/AVX-512): decoding one token at a time runs ~1.7x
faster on one core. The output layer is kept at its Q8_0 (re-quantizing it to Q4_0 made decoding
slower, not faster). Re-quantizing loses precision (5 -> 4 bits per weight), so replies differ:
`bench/quant_check.py` measures how much, and the default preset stays the bundled file.

    python -m llm_service.requantize SOURCE.gguf TARGET.gguf   # what `derive` runs in a subprocess
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

log = logging.getLogger("llm-service")

# llama.cpp type names (llama_cpp.LLAMA_FTYPE_MOSTLY_* / GGML_TYPE_*).
WEIGHTS_TYPE = "Q4_0"
OUTPUT_TYPE = "Q8_0"


class RequantizeError(RuntimeError):
    pass


def _stamp(source: Path) -> str:
    """What the derived file was made from: a changed source (size or mtime) means derive again."""
    stat = source.stat()
    return f"{source.resolve()} {stat.st_size} {stat.st_mtime_ns} {WEIGHTS_TYPE} {OUTPUT_TYPE}\n"


def derive(source: Path, target: Path) -> Path:
    """`target` re-quantized from `source` (done once; the stamp file beside it names the source).
    The quantizer runs in a subprocess: it prints a line per tensor and a crash must not take the
    service down with a half-written file (it writes `.tmp`, then renames)."""
    stamp_path = target.with_name(target.name + ".from")
    stamp = _stamp(source)
    if target.is_file() and stamp_path.is_file() and stamp_path.read_text() == stamp:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    log.info(
        "re-quantizing %s -> %s (%s, output layer %s), once (a few seconds)", source, target, WEIGHTS_TYPE, OUTPUT_TYPE
    )
    started = time.perf_counter()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "llm_service.requantize", str(source), str(tmp)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0 or not tmp.is_file():
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-5:])
            raise RequantizeError(f"re-quantizing {source} failed (exit {done.returncode}): {tail}")
        os.replace(tmp, target)
        stamp_path.write_text(stamp)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("re-quantized in %.1f s (%.0f MB)", time.perf_counter() - started, target.stat().st_size / 1e6)
    return target


def quantize(source: Path, target: Path, threads: int = 2) -> None:
    """One llama_model_quantize call (blocking; prints per-tensor lines on stderr)."""
    import ctypes

    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{WEIGHTS_TYPE}")
    params.output_tensor_type = getattr(llama_cpp, f"GGML_TYPE_{OUTPUT_TYPE}")
    params.token_embedding_type = getattr(llama_cpp, f"GGML_TYPE_{OUTPUT_TYPE}")
    params.allow_requantize = True  # the source is already quantized (that is the point)
    params.nthread = threads
    status = llama_cpp.llama_model_quantize(str(source).encode(), str(target).encode(), ctypes.byref(params))
    if status != 0:
        raise RequantizeError(f"llama_model_quantize returned {status}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path)
    parser.add_argument("target", type=Path)
    args = parser.parse_args()
    quantize(args.source, args.target, threads=max(1, min(2, os.cpu_count() or 1)))


if __name__ == "__main__":
    main()
