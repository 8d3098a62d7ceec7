"""Helpers for the reliability suite (tests/test_reliability_*.py): real service stacks, bounded
waits on live counters, grpcurl, spoken fixtures, and a one-turn orchestrator entry point run as
a subprocess (so its telemetry environment is its own):

    python -m tests.reliability_helpers turn --stt HOST:PORT --llm HOST:PORT --tts HOST:PORT FIXTURE.wav
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import threading
import time
import wave
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from service_runtime.launcher import ServiceProcess

ROOT = Path(__file__).resolve().parent.parent
AUDIO = Path(__file__).parent / "fixtures" / "audio"
FIXTURES: dict[str, dict[str, Any]] = {f["file"]: f for f in json.loads((AUDIO / "transcripts.json").read_text())}
QUESTIONS = [f for f in FIXTURES.values() if f["kind"] in ("question", "paused")]
GRPCURL = str(Path(sys.executable).parent / "grpcurl")
# The small LLM with a small context: loads and warms up in seconds.
SMOLLM = ["--model", "smollm2-135m", "--n-ctx", "2048"]
KINDS = ("stt", "llm", "tts")


def pcm(name: str) -> bytes:
    """16 kHz mono s16le samples of a spoken fixture."""
    with wave.open(str(AUDIO / name)) as w:
        assert w.getframerate() == 16000 and w.getnchannels() == 1 and w.getsampwidth() == 2
        return w.readframes(w.getnframes())


def speech(name: str) -> bytes:
    """The voiced part of a fixture (its leading and trailing silence cut off)."""
    item = FIXTURES[name]
    return pcm(name)[item["speech_start_ms"] * 32 : item["speech_end_ms"] * 32]


def silence_ms(ms: int) -> bytes:
    return b"\x00\x00" * (16 * ms)


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> float:
    """Seconds until `predicate()` holds; each try is one RPC round trip, bounded by a deadline."""
    started = time.monotonic()
    pause = threading.Event()  # never set: a short bounded pause between polls, not synchronisation
    while not predicate():
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"{what} did not happen within {timeout_s:.1f}s")
        pause.wait(0.005)
    return time.monotonic() - started


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise KeyError("VmRSS")


def grpcurl(*args: str, stdin: str | None = None, timeout_s: float = 60.0) -> str:
    done = subprocess.run(
        [GRPCURL, "-plaintext", *args], input=stdin, capture_output=True, text=True, timeout=timeout_s
    )
    assert done.returncode == 0, f"grpcurl {' '.join(args[:3])} failed: {done.stderr}"
    return done.stdout


def json_stream(text: str) -> list[dict[str, Any]]:
    """The JSON objects grpcurl prints one after the other for a streaming reply."""
    decoder = json.JSONDecoder()
    out, text = [], text.strip()
    while text:
        obj, end = decoder.raw_decode(text)
        out.append(obj)
        text = text[end:].strip()
    return out


class Stack:
    """The three real services as subprocesses on loopback (port 0 unless restarted on a fixed port)."""

    def __init__(
        self,
        stt: Sequence[str] = (),
        llm: Sequence[str] = (),
        tts: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.args = {"stt": list(stt), "llm": [*SMOLLM, *llm], "tts": list(tts)}
        self.env = env or {}
        self.procs: dict[str, ServiceProcess] = {}

    def start(self, timeout_s: float = 180.0) -> Stack:
        for kind in KINDS:
            self.procs[kind] = ServiceProcess(kind, args=self.args[kind], env=self.env)
        with ThreadPoolExecutor(3) as pool:
            list(pool.map(lambda p: p.wait_serving(timeout_s), self.procs.values()))
        return self

    def restart(self, kind: str, timeout_s: float = 180.0) -> ServiceProcess:
        """Start `kind` again on the port it had (after it died) and wait until it is SERVING."""
        old = self.procs[kind]
        assert old.process.poll() is not None, f"{kind}-service is still running"
        self.procs[kind] = ServiceProcess(kind, args=self.args[kind], port=old.port, env=self.env)
        return self.procs[kind].wait_serving(timeout_s)

    def address(self, kind: str) -> str:
        return self.procs[kind].address

    @property
    def addresses(self) -> Any:
        from orchestrator.config import ServiceAddresses

        return ServiceAddresses(stt=self.address("stt"), llm=self.address("llm"), tts=self.address("tts"))

    def stop(self) -> dict[str, int]:
        """SIGTERM every service; their exit codes."""
        return {kind: proc.terminate() for kind, proc in self.procs.items()}

    def logs(self) -> str:
        return "\n".join(f"--- {kind}\n{proc.log[-2500:]}" for kind, proc in self.procs.items())


# ---- one orchestrator turn in its own process ----------------------------------------------------


def run_turn_subprocess(stack: Stack, fixture: str, env: dict[str, str], timeout_s: float = 90.0) -> dict[str, Any]:
    """Run one paced turn through `python -m tests.reliability_helpers turn`; its TurnResult dict."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [
            *(sys.executable, "-m", "tests.reliability_helpers", "turn"),
            *("--stt", stack.address("stt"), "--llm", stack.address("llm"), "--tts", stack.address("tts")),
            str(AUDIO / fixture),
        ],
        env={**clean, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, done.stdout + done.stderr[-2000:]
    return dict(json.loads(lines[0]))


async def _turn(args: argparse.Namespace) -> None:
    from orchestrator.audio import load_wav_pcm16
    from orchestrator.config import ServiceAddresses
    from orchestrator.pipeline import Conversation
    from service_runtime import telemetry
    from voice.llm.v1 import llm_pb2

    addresses = ServiceAddresses(stt=args.stt, llm=args.llm, tts=args.tts)
    audio = load_wav_pcm16(args.wav)
    greedy = llm_pb2.SamplingOptions(temperature=0.0, seed=1)
    async with Conversation(addresses, max_tokens=args.max_tokens, sampling=greedy, preemptive=False) as conv:
        results = await asyncio.wait_for(conv.run_file(audio, 16000, pace=True), args.timeout_s)
    for result in results:
        print(result.to_json(), flush=True)
    telemetry.shutdown_tracing(timeout_s=1.0)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.reliability_helpers")
    sub = parser.add_subparsers(dest="command", required=True)
    turn = sub.add_parser("turn", help="one paced turn from a WAV file; prints the TurnResult JSON")
    for kind in KINDS:
        turn.add_argument(f"--{kind}", required=True)
    turn.add_argument("--max-tokens", type=int, default=24)
    turn.add_argument("--timeout-s", type=float, default=60.0)
    turn.add_argument("wav")
    args = parser.parse_args(argv)
    asyncio.run(_turn(args))


if __name__ == "__main__":
    main()
