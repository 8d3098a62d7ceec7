"""The mlx backend (Kokoro via mlx-audio) on a tiny randomly initialised Kokoro model.

Needs the mlx extra (Apple Silicon, or mlx[cpu]); skipped when mlx_audio is not installed.
Random weights make noise, not words: this checks the plumbing (load, voice pack, G2P,
int16 PCM out through the engine and the text cleaner), not the voice quality.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.mlx

mx = pytest.importorskip("mlx.core")
pytest.importorskip("mlx_audio")
pytest.importorskip("misaki")

# Phoneme symbols of Kokoro's vocabulary (subset): enough for misaki's American English output.
PHONEMES = ';:,.!?—…"()“” AIOQSTWYᵊabcdefhijklmnopqrstuvwxyzɑɐɒæβɔɕçɖðʤəɚɛɜɟɡɥɨɪʝɯɰŋɳɲɴøɸθœɹɾɻʁɽʂʃʈʧʊʋʌɣɤχʎʒʔˈˌːʰʲ↓→↗↘ᵻ'


def tiny_kokoro() -> object:
    from mlx_audio.tts.models.kokoro.kokoro import Model, ModelConfig

    config = ModelConfig(
        istftnet={
            "upsample_kernel_sizes": [20, 12],
            "upsample_rates": [10, 6],
            "gen_istft_hop_size": 5,
            "gen_istft_n_fft": 20,
            "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
            "resblock_kernel_sizes": [3, 7, 11],
            "upsample_initial_channel": 32,
        },
        dim_in=16,
        dropout=0.0,
        hidden_dim=32,
        max_conv_dim=32,
        max_dur=10,
        multispeaker=True,
        n_layer=1,
        n_mels=80,
        n_token=len(PHONEMES) + 1,
        style_dim=128,  # Kokoro slices the voice vector at 128: keep the real size
        text_encoder_kernel_size=5,
        plbert={
            "hidden_size": 32,
            "num_attention_heads": 2,
            "intermediate_size": 64,
            "max_position_embeddings": 512,
            "num_hidden_layers": 1,
            "dropout": 0.0,
        },
        vocab={ch: i + 1 for i, ch in enumerate(PHONEMES)},
    )
    model = Model(config, repo_id="local/tiny-kokoro")
    mx.eval(model.parameters())
    return model


def test_tiny_random_kokoro_speaks_int16_pcm_through_the_engine(tmp_path: Path) -> None:
    from tts_service.engine import Backend, LoadedVoice, TtsEngine
    from tts_service.kokoro_voice import MlxKokoroVoiceModel

    voice_path = tmp_path / "af_tiny.safetensors"
    mx.save_safetensors(str(voice_path), {"af_tiny": mx.random.normal((510, 1, 256)) * 0.1})
    model = MlxKokoroVoiceModel(tiny_kokoro(), voice=str(voice_path))
    engine = TtsEngine([LoadedVoice(model)], Backend.MLX, threads=1)
    try:
        voice = engine.voice("")
        assert (voice.info.name, voice.info.backend, voice.info.sample_rate_hz) == (
            "kokoro-af_tiny",
            Backend.MLX,
            24000,
        )
        result = voice.synthesize_blocking("Hello **there** 😊.", sample_rate_hz=16000)
        assert result.spoken_text == "Hello there."
        audio = np.frombuffer(result.pcm, dtype="<i2")
        assert audio.size > 0 and result.sample_rate_hz == 16000
        assert voice.synthesize_blocking("😊").pcm == b""
    finally:
        engine.close()
