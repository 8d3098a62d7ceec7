"""Every numeric flag of the three services, the orchestrator, the bench and the launcher has a range: a value outside it,
from the flag or from its environment variable, is a usage error (exit status 2) naming the flag,
the value and what is allowed, raised while the flags are parsed, before any model loads."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import pytest

from bench.__main__ import parse_args as bench_arguments
from llm_service.__main__ import SPEC as LLM
from orchestrator.__main__ import build_parser as orchestrator_parser
from service_runtime.config import env_name
from service_runtime.launcher import main as launcher_main
from service_runtime.probe import main as probe_main
from service_runtime.server import ServiceSpec, parse_arguments
from stt_service.__main__ import SPEC as STT
from tests.helpers import ROOT
from tts_service.__main__ import SPEC as TTS

INT_1 = "an integer >= 1"
INT_0 = "an integer >= 0"
SILENCE = "an integer from 100 to 5000"
CANDIDATE = "an integer from 32 to 5000"  # a candidate may come at the first pause the VAD sees
PORT = "an integer from 0 to 65535"

# (service, flag, bad value, what the error says is allowed)
SERVICE_CASES = [
    (LLM, "--n-ctx", "0", INT_1),
    (LLM, "--threads", "0", INT_1),
    (LLM, "--threads", "two", INT_1),
    (LLM, "--threads-batch", "-1", INT_0),
    (LLM, "--burst-threads", "-1", INT_0),
    (LLM, "--burst-tokens", "0", INT_1),
    (LLM, "--max-tokens-limit", "0", INT_1),
    (LLM, "--default-max-tokens", "0", INT_1),
    (LLM, "--temperature", "2.5", "a number from 0 to 2"),  # what a Generate request may ask for
    (LLM, "--temperature", "nan", "a number from 0 to 2"),
    (LLM, "--max-queue", "-1", INT_0),
    (LLM, "--max-sessions", "0", INT_1),
    (LLM, "--session-ttl-s", "0", "a number above 0"),
    (STT, "--threads", "0", INT_1),
    (STT, "--max-sessions", "0", INT_1),
    (STT, "--endpoint-ms", "50", SILENCE),  # what a RecognitionConfig may ask for
    (STT, "--min-endpoint-ms", "6000", SILENCE),
    (STT, "--hinted-endpoint-ms", "0", SILENCE),
    (STT, "--max-endpoint-ms", "99", SILENCE),
    (STT, "--candidate-ms", "31", CANDIDATE),
    (STT, "--interim-interval-ms", "10", "an integer >= 100"),
    (STT, "--vad-threshold", "1", "a number above 0 and below 1"),
    (STT, "--vad-threshold", "0", "a number above 0 and below 1"),
    (STT, "--beam-size", "0", INT_1),
    (TTS, "--threads", "0", INT_1),
    (TTS, "--max-streams", "0", INT_1),
    (TTS, "--max-text-chars", "0", INT_1),
    (TTS, "--chunk-ms", "5", "an integer >= 10"),
    (TTS, "--first-clause-chars", "-1", INT_0),
    (TTS, "--first-phrase-words", "-1", INT_0),
    # The runtime's own flags, the same in all three.
    (TTS, "--port", "65536", PORT),
    (STT, "--health-port", "-2", "an integer from -1 to 65535"),
    (LLM, "--grace-s", "-1", "a number >= 0"),
    (TTS, "--max-message-mib", "0", "a number above 0 and <= 2047"),
]


def case_id(case: tuple[ServiceSpec, str, str, str]) -> str:
    return f"{case[0].kind}{case[1]}={case[2]}"


def usage_error(capsys: pytest.CaptureFixture[str], parse: Callable[[], object]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        parse()
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    return err


@pytest.mark.parametrize(("spec", "flag", "value", "allowed"), SERVICE_CASES, ids=[case_id(c) for c in SERVICE_CASES])
def test_an_out_of_range_flag_is_a_usage_error_saying_what_is_allowed(
    capsys: pytest.CaptureFixture[str], spec: ServiceSpec, flag: str, value: str, allowed: str
) -> None:
    err = usage_error(capsys, lambda: parse_arguments(spec, [flag, value]))
    said = f"{value!r} is not an integer" if value == "two" else f"{value} is out of range"
    assert f"argument {flag}: {said}; allowed: {allowed}" in err, err


@pytest.mark.parametrize(("spec", "flag", "value", "allowed"), SERVICE_CASES, ids=[case_id(c) for c in SERVICE_CASES])
def test_an_out_of_range_environment_variable_is_a_usage_error_naming_it_and_its_flag(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    spec: ServiceSpec,
    flag: str,
    value: str,
    allowed: str,
) -> None:
    variable = env_name(spec.env_prefix, flag)
    monkeypatch.setenv(variable, value)
    err = usage_error(capsys, lambda: parse_arguments(spec, []))
    assert f"{variable}={value!r} (for {flag})" in err and f"allowed: {allowed}" in err, err


def test_the_ends_of_each_range_are_accepted() -> None:
    args = parse_arguments(
        LLM,
        ["--threads-batch", "0", "--max-queue", "0", "--temperature", "2", "--n-ctx", "1", "--health-port", "-1"],
    )
    assert (args.threads_batch, args.max_queue, args.temperature, args.n_ctx) == (0, 0, 2.0, 1)
    args = parse_arguments(STT, ["--vad-threshold", "0.01", "--endpoint-ms", "5000", "--candidate-ms", "100"])
    assert (args.vad_threshold, args.endpoint_ms, args.candidate_ms) == (0.01, 5000, 100)
    args = parse_arguments(TTS, ["--port", "0", "--first-phrase-words", "0", "--chunk-ms", "10"])
    assert (args.port, args.first_phrase_words, args.chunk_ms) == (0, 0, 10)


# --default-max-tokens against --max-tokens-limit; the STT endpoints against each other.
def test_a_default_max_tokens_above_the_limit_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    err = usage_error(capsys, lambda: parse_arguments(LLM, ["--default-max-tokens", "600"]))
    assert "--default-max-tokens 600 is above --max-tokens-limit 512; allowed: 1 to 512" in err, err
    monkeypatch.setenv("LLM_DEFAULT_MAX_TOKENS", "100")
    err = usage_error(capsys, lambda: parse_arguments(LLM, ["--max-tokens-limit", "48"]))
    assert "--default-max-tokens 100 is above --max-tokens-limit 48" in err, err


def test_an_unset_default_max_tokens_follows_a_lower_limit() -> None:
    assert parse_arguments(LLM, []).default_max_tokens == 200
    assert parse_arguments(LLM, ["--max-tokens-limit", "48"]).default_max_tokens == 48


def test_the_candidate_pause_must_be_below_the_short_endpoint(capsys: pytest.CaptureFixture[str]) -> None:
    err = usage_error(capsys, lambda: parse_arguments(STT, ["--candidate-ms", "400"]))
    assert "--candidate-ms 400 must be below the short endpoint (--min-endpoint-ms 320" in err, err
    # A short endpoint above the long one is lowered to it (as before), and then checked.
    err = usage_error(capsys, lambda: parse_arguments(STT, ["--endpoint-ms", "150"]))
    assert "--candidate-ms 160 must be below the short endpoint" in err, err
    assert parse_arguments(STT, ["--endpoint-ms", "300"]).endpoint_ms == 300


ORCHESTRATOR_CASES = [
    (["talk", "--max-tokens", "-1"], INT_0),
    (["talk", "--endpoint-silence-ms", "50"], f"0 or {SILENCE}"),
    (["demo", "--candidate-silence-ms", "6000"], f"0 or {CANDIDATE}"),
    (["talk", "--candidate-silence-ms", "31"], f"0 or {CANDIDATE}"),
    (["web", "--min-endpoint-silence-ms", "99"], f"0 or {SILENCE}"),
    (["demo", "--timeout-s", "0"], "a number above 0"),
    (["web", "--port", "70000"], PORT),
    (["web", "--max-sessions", "0"], INT_1),
]


@pytest.mark.parametrize(("argv", "allowed"), ORCHESTRATOR_CASES, ids=[" ".join(a) for a, _ in ORCHESTRATOR_CASES])
def test_an_out_of_range_orchestrator_flag_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], argv: list[str], allowed: str
) -> None:
    err = usage_error(capsys, lambda: orchestrator_parser().parse_args(argv))
    assert f"argument {argv[1]}: {argv[2]} is out of range; allowed: {allowed}" in err, err


TOOL_CASES = [
    (bench_arguments, ["--rounds", "-1"], "argument --rounds: -1 is out of range; allowed: an integer >= 0"),
    (bench_arguments, ["--concurrency", "1,two"], "allowed comma-separated integers >= 1, or ''"),
    (bench_arguments, ["--concurrency", "0"], "allowed comma-separated integers >= 1, or ''"),
    (bench_arguments, ["--compare-candidate", "20"], "allowed: 0 or an integer from 32 to 5000"),
    (launcher_main, ["start", "--replicas", "10"], "allowed: an integer from 1 to 9"),
    (probe_main, ["127.0.0.1:1", "--timeout-s", "0"], "allowed: a number above 0"),
]


@pytest.mark.parametrize(("entry", "argv", "message"), TOOL_CASES, ids=[" ".join(a) for _, a, _ in TOOL_CASES])
def test_an_out_of_range_bench_or_launcher_flag_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], entry: Callable[[list[str]], object], argv: list[str], message: str
) -> None:
    err = usage_error(capsys, lambda: entry(argv))
    assert message in err, err


def test_the_bench_reads_its_concurrency_levels() -> None:
    assert bench_arguments(["--concurrency", "1, 2,4"]).concurrency == [1, 2, 4]
    assert bench_arguments(["--concurrency", ""]).concurrency == []


@pytest.mark.parametrize(("variable", "value"), [("WEB_PORT", "http"), ("WEB_MAX_SESSIONS", "0")])
def test_an_out_of_range_web_variable_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    err = usage_error(capsys, orchestrator_parser)
    assert f"{variable}={value!r}" in err and "allowed: " in err, err


def test_the_orchestrator_zeros_mean_the_servers_defaults() -> None:
    args = orchestrator_parser().parse_args(["talk", "--endpoint-silence-ms", "0", "--max-tokens", "0"])
    assert (args.endpoint_silence_ms, args.max_tokens) == (0, 0)


@pytest.mark.parametrize(
    ("module", "argv", "message"),
    [
        (
            "llm_service",
            ["--port", "0", "--default-max-tokens", "600"],
            "--default-max-tokens 600 is above --max-tokens-limit 512",
        ),
        (
            "stt_service",
            ["--port", "0", "--candidate-ms", "400"],
            "--candidate-ms 400 must be below the short endpoint",
        ),
        (
            "tts_service",
            ["--port", "0", "--chunk-ms", "0"],
            "argument --chunk-ms: 0 is out of range; allowed: an integer >= 10",
        ),
        ("orchestrator", ["talk", "--max-tokens", "-5"], "argument --max-tokens: -5 is out of range"),
    ],
)
def test_the_command_exits_2_with_the_message_before_loading_anything(
    module: str, argv: list[str], message: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", module, *argv],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert "listening on" not in done.stderr and "loading" not in done.stderr
