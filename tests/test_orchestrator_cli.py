"""The `orchestrator` command as a user runs it (subprocess): file mode against fakes, and its errors."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.audio import load_wav_pcm16, read_wav, rms, write_wav
from orchestrator.report import waterfall
from orchestrator.timing import TurnResult
from tests.fakes import FakeLanguageModel, FakeSpeechToText, FakeTextToSpeech, serve_fakes, utterance
from tests.otlp_collector import OtlpCollector

ROOT = Path(__file__).resolve().parents[1]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "STT_", "LLM_", "TTS_"))}
    return {**env, **extra}


def test_file_mode_writes_reply_wav_json_lines_and_the_latency_table(tmp_path: Path) -> None:
    question = tmp_path / "question.wav"
    write_wav(question, bytes(16000 * 2), 16000)  # the fake STT does not listen
    reply_wav, jsonl = tmp_path / "reply.wav", tmp_path / "turns.jsonl"
    reply = "Paris is sunny today. Enjoy it!"
    collector = OtlpCollector().start()  # spans exported: the table links the turn's trace in Jaeger

    async def scenario() -> tuple[int, str, str]:
        fakes = await serve_fakes(
            FakeSpeechToText(utterance("what is the weather", 100, 600, 800)),
            FakeLanguageModel(reply),
            FakeTextToSpeech(sample_rate_hz=22050),
        )
        env = clean_env(
            STT_ADDRESS=fakes.address,
            LLM_ADDRESS=fakes.address,
            TTS_ADDRESS=fakes.address,
            JAEGER_UI_URL="http://jaeger.example:16686",
            OTEL_EXPORTER_OTLP_ENDPOINT=collector.endpoint,
        )
        args = ["talk", "--input", str(question), "--output", str(reply_wav), "--json", str(jsonl), "--no-pace"]
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "orchestrator", *args, cwd=ROOT, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(process.communicate(), 60)
        await fakes.server.stop(None)
        return process.returncode or 0, out.decode(), err.decode()

    try:
        code, out, err = asyncio.run(scenario())
        assert code == 0, out + err
        (record,) = [json.loads(line) for line in jsonl.read_text().splitlines()]
        collector.wait_for(lambda spans: any(s.name == "turn" and s.trace_id == record["trace_id"] for s in spans))
    finally:
        collector.stop()
    assert "you: what is the weather" in out
    assert "agent: Paris is sunny today. Enjoy it!" in out
    for label in ("STT final", "first token", "first sentence", "first audio", "playback start", "DEAD AIR", "total"):
        assert label in out
    assert f"http://jaeger.example:16686/trace/{record['trace_id']}" in out
    for key in ("mode", "transcript", "reply", "dead_air_ms", "stt_final_ms", "llm_ttft_ms", "tts_ttfa_ms", "total_ms"):
        assert key in record
    assert record["mode"] == "streaming" and record["reply"] == reply and record["barge_in"] is False
    samples, rate = read_wav(reply_wav)
    assert rate == 22050 and len(samples) > 0.1 * rate
    assert rms(load_wav_pcm16(reply_wav, 22050)) > 0.05


def test_the_table_links_jaeger_only_when_spans_are_exported_else_says_how() -> None:
    result = TurnResult(
        mode="streaming", transcript="hi", reply="Hello.", heard_reply="Hello.", dead_air_ms=400.0,
        stt_final_ms=300.0, llm_ttft_ms=350.0, first_sentence_ms=380.0, tts_ttfa_ms=390.0,
        playback_start_ms=400.0, total_ms=900.0, barge_in=False, preemptive_used=False,
        trace_id="ab" * 16, session_id="conv-1", audio=b"", sample_rate_hz=0,
    )  # fmt: skip
    exported = waterfall(result, exported=True)
    assert f"/trace/{'ab' * 16}" in exported
    local = waterfall(result, exported=False)
    assert "/trace/" not in local and "http://localhost:16686" not in local
    assert "not exported" in local and "OTEL_EXPORTER_OTLP_ENDPOINT" in local


def test_service_down_is_one_clear_line_naming_it_and_make_serve(tmp_path: Path) -> None:
    question = tmp_path / "q.wav"
    write_wav(question, bytes(3200), 16000)
    port = closed_port()
    env = clean_env(LLM_ADDRESS=f"127.0.0.1:{port}")

    async def scenario() -> tuple[int, str]:
        fakes = await serve_fakes(FakeSpeechToText(), FakeLanguageModel(), FakeTextToSpeech())
        env.update(STT_ADDRESS=fakes.address, TTS_ADDRESS=fakes.address)
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "orchestrator", "talk", "--input", str(question), cwd=ROOT, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(process.communicate(), 60)
        await fakes.server.stop(None)
        return process.returncode or 0, out.decode()

    code, out = asyncio.run(scenario())
    assert code != 0
    assert "Traceback" not in out
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1, out
    assert "llm-service" in out and f"127.0.0.1:{port}" in out and "make serve" in out
    assert "stt-service" not in out and "tts-service" not in out


def test_talk_without_an_audio_device_says_so_and_shows_file_mode() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", "talk"],
        cwd=ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    out = done.stdout + done.stderr
    assert done.returncode != 0
    assert "Traceback" not in out
    assert "no audio input/output device found" in out
    assert "--input" in out and "--output" in out


def test_seed_and_temperature_flags_reach_the_llm_request_and_bad_values_are_usage_errors(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from orchestrator.__main__ import build_parser
    from orchestrator.config import Settings

    parser = build_parser()
    chosen = Settings.from_args(parser.parse_args(["talk", "--seed", "5", "--temperature", "0.2"])).sampling
    assert chosen is not None and chosen.seed == 5 and abs(chosen.temperature - 0.2) < 1e-6
    only_seed = Settings.from_args(parser.parse_args(["talk", "--seed", "0"])).sampling
    assert only_seed is not None and only_seed.HasField("seed") and not only_seed.HasField("temperature")
    assert Settings.from_args(parser.parse_args(["talk"])).sampling is None  # the server's defaults
    for argv, allowed in ((["--seed", "-1"], "0 to 4294967295"), (["--temperature", "2.5"], "0 to 2")):
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args(["talk", *argv])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and argv[0] in err and allowed in err, err
