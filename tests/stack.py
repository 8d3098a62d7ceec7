"""The three real services as subprocesses (tests/conftest.py starts one such stack per test run;
modules that kill or restart a service start their own), and a one-turn orchestrator entry point
run as a subprocess (so its telemetry environment is its own):

    python -m tests.stack turn --stt HOST:PORT --llm HOST:PORT --tts HOST:PORT FIXTURE.wav
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from service_runtime.launcher import ServiceProcess
from tests.helpers import AUDIO, ROOT

# The small LLM with a small context: loads and warms up in seconds.
SMOLLM = ["--model", "smollm2-135m", "--n-ctx", "2048"]
KINDS = ("stt", "llm", "tts")
# The session's shared stack (tests/conftest.py): limits large enough for 20 concurrent
# conversations (one briefly holds two STT streams at each turn hand-over). Tests that fill a
# cap read it from GetStats.
LLM_MAX_TOKENS_LIMIT = 512
LLM_N_CTX = 1024  # small enough that history truncation is reached in a few turns
SHARED_STACK_ARGS = {
    "stt": ["--max-sessions", "44"],
    "llm": [
        *("--n-ctx", str(LLM_N_CTX), "--max-queue", "24", "--max-sessions", "256"),
        # A request without max_tokens (the fuzz test sends many) gets a short reply.
        *("--max-tokens-limit", str(LLM_MAX_TOKENS_LIMIT), "--default-max-tokens", "48"),
    ],
    "tts": ["--max-streams", "24", "--grace-s", "1"],
}
SECOND_VOICE = "en_US-second-medium"


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
        try:
            with ThreadPoolExecutor(3) as pool:
                list(pool.map(lambda p: p.wait_serving(timeout_s), self.procs.values()))
        except BaseException:
            for proc in self.procs.values():
                proc.kill()
            raise
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

    def stop_cleanly(self) -> None:
        """Stop every service; each must exit 0 (graceful shutdown) without a logged traceback."""
        codes = self.stop()
        assert codes == {kind: 0 for kind in self.procs}, self.logs()
        for kind, proc in self.procs.items():
            assert "Traceback" not in proc.log, f"{kind}-service logged a traceback:\n{proc.log[-3000:]}"

    def logs(self) -> str:
        return "\n".join(f"--- {kind}\n{proc.log[-2500:]}" for kind, proc in self.procs.items())


# ---- one orchestrator turn in its own process ----------------------------------------------------


def run_turn_subprocess(
    stack: Stack, fixture: str, env: dict[str, str], timeout_s: float = 90.0, flush_s: float = 1.0, pace: bool = True
) -> dict[str, Any]:
    """Run one turn (paced unless `pace=False`) through `python -m tests.stack turn`; its TurnResult
    dict. The process flushes its spans for up to `flush_s` after printing the result."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [
            *(sys.executable, "-m", "tests.stack", "turn"),
            *("--stt", stack.address("stt"), "--llm", stack.address("llm"), "--tts", stack.address("tts")),
            *("--flush-s", str(flush_s), *(() if pace else ("--no-pace",)), str(AUDIO / fixture)),
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
    from orchestrator.conversation import Conversation
    from service_runtime import telemetry
    from voice.llm.v1 import llm_pb2

    telemetry.setup_tracing("orchestrator")  # the entry point, like `python -m orchestrator`
    addresses = ServiceAddresses(stt=args.stt, llm=args.llm, tts=args.tts)
    audio = load_wav_pcm16(args.wav)
    greedy = llm_pb2.SamplingOptions(temperature=0.0, seed=1)
    async with Conversation(addresses, max_tokens=args.max_tokens, sampling=greedy, preemptive=False) as conv:
        results = await asyncio.wait_for(conv.run_file(audio, 16000, pace=not args.no_pace), args.timeout_s)
    for result in results:
        print(result.to_json(), flush=True)
    telemetry.shutdown_tracing(timeout_s=args.flush_s)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.stack")
    sub = parser.add_subparsers(dest="command", required=True)
    turn = sub.add_parser("turn", help="one turn from a WAV file; prints the TurnResult JSON")
    for kind in KINDS:
        turn.add_argument(f"--{kind}", required=True)
    turn.add_argument("--max-tokens", type=int, default=24)
    turn.add_argument("--timeout-s", type=float, default=60.0)
    turn.add_argument("--flush-s", type=float, default=1.0, help="time to flush spans after the turn")
    turn.add_argument("--no-pace", action="store_true", help="send the audio as fast as it is taken")
    turn.add_argument("wav")
    args = parser.parse_args(argv)
    asyncio.run(_turn(args))


if __name__ == "__main__":
    main()
