"""The mlx backend with a tiny randomly initialised MLX Whisper model (skipped without the mlx extra)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

mlx_whisper = pytest.importorskip("mlx_whisper")
pytestmark = pytest.mark.mlx


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_whisper import whisper

    dims = {
        "n_mels": 80,
        "n_audio_ctx": 1500,
        "n_audio_state": 64,
        "n_audio_head": 2,
        "n_audio_layer": 1,
        "n_vocab": 51864,  # English-only vocabulary (gpt2 tokenizer)
        "n_text_ctx": 448,
        "n_text_state": 64,
        "n_text_head": 2,
        "n_text_layer": 1,
    }
    model = whisper.Whisper(whisper.ModelDimensions(**dims))
    path = tmp_path_factory.mktemp("mlx-tiny-random")
    (path / "config.json").write_text(json.dumps({**dims, "model_type": "whisper"}))
    mx.save_safetensors(str(path / "weights.safetensors"), dict(tree_flatten(model.parameters())))
    return path


def test_mlx_engine_decodes_with_a_random_model(tiny_model: Path) -> None:
    from stt_service.backends import create_engine
    from stt_service.engine import Backend

    engine = create_engine(Backend.MLX, str(tiny_model), threads=1)
    assert engine.backend is Backend.MLX and engine.describe()["path"] == str(tiny_model.resolve())
    assert engine.check_language("en-US") == "en"
    audio = (np.random.default_rng(0).standard_normal(16000) * 0.05).astype(np.float32)
    result = engine.transcribe(audio, "en")
    assert isinstance(result.text, str)  # random weights: any text, but the plumbing runs end to end
