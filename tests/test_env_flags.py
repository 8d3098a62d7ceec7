"""Flags with environment-variable fallbacks, as the three services parse them (service_runtime.config)."""

from __future__ import annotations

import pytest

from llm_service.__main__ import SPEC as LLM
from service_runtime.server import build_parser
from stt_service.__main__ import SPEC as STT
from stt_service.engine import Backend
from tts_service.__main__ import SPEC as TTS


def test_defaults_then_environment_then_command_line(monkeypatch: pytest.MonkeyPatch) -> None:
    assert build_parser(LLM).parse_args([]).max_queue == 4
    monkeypatch.setenv("LLM_MAX_QUEUE", "7")
    monkeypatch.setenv("LLM_TEMPERATURE", "0.2")
    args = build_parser(LLM).parse_args([])
    assert (args.max_queue, args.temperature) == (7, 0.2)
    assert build_parser(LLM).parse_args(["--max-queue", "9"]).max_queue == 9


def test_switches_enums_and_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STT_FULL_WINDOW", "yes")
    monkeypatch.setenv("STT_BACKEND", "faster-whisper")
    args = build_parser(STT).parse_args([])
    assert args.full_window is True and args.backend is Backend.FASTER_WHISPER
    monkeypatch.setenv("TTS_VOICE", "a.onnx, b.onnx")
    assert build_parser(TTS).parse_args([]).voice == ["a.onnx", "b.onnx"]
    assert build_parser(TTS).parse_args(["--voice", "c.onnx", "--voice", "d.onnx"]).voice == ["c.onnx", "d.onnx"]


@pytest.mark.parametrize(("name", "value"), [("STT_THREADS", "two"), ("STT_BACKEND", "whisper.cpp")])
def test_a_bad_environment_value_is_a_usage_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as exit_info:
        build_parser(STT)
    assert exit_info.value.code == 2 and f"{name}={value!r}" in capsys.readouterr().err
