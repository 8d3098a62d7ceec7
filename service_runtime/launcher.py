"""Start, wait for and stop the three services as processes.

Used by `make serve` / `make stop` (fixed ports, logs in .run/), by the orchestrator's demo,
by the benchmark and by tests (port 0, the bound port read from the service's log line).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


@dataclass(frozen=True)
class ServiceInfo:
    kind: str  # "stt", "llm", "tts"
    module: str
    default_port: int


SERVICES: dict[str, ServiceInfo] = {
    "stt": ServiceInfo("stt", "stt_service", 50051),
    "llm": ServiceInfo("llm", "llm_service", 50052),
    "tts": ServiceInfo("tts", "tts_service", 50053),
}
RUN_DIR = Path(".run")
_LISTENING = re.compile(r"listening on (\S+):(\d+)")


class ServiceError(RuntimeError):
    pass


def wait_serving(address: str, timeout_s: float, service: str = "") -> None:
    """Block until the grpc.health.v1 status of `address` is SERVING (health Watch, no polling)."""
    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ServiceError(f"{address} did not report SERVING within {timeout_s:.0f}s")
            try:
                for reply in stub.Watch(
                    health_pb2.HealthCheckRequest(service=service), timeout=remaining, wait_for_ready=True
                ):
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
            except grpc.RpcError as error:
                if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                    raise ServiceError(f"{address} did not report SERVING within {timeout_s:.0f}s") from error
                # The server went away mid-watch (e.g. restarting): retry until the deadline.
                time.sleep(0.1)


class ServiceProcess:
    """One service subprocess. With port 0 its bound port is read from its start-up log."""

    def __init__(
        self,
        kind: str,
        args: Sequence[str] = (),
        port: int = 0,
        env: dict[str, str] | None = None,
        log_path: Path | None = None,
        detach: bool = False,
        module: str | None = None,
        stdin_pipe: bool = False,
    ) -> None:
        self.kind = kind
        module = module or SERVICES[kind].module
        self.log_path = log_path
        self.port = port
        self._listening = threading.Event()
        self._log_lines: list[str] = []
        cmd = [sys.executable, "-u", "-m", module, "--port", str(port), *args]
        full_env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen[Any]
        if detach:
            # Outlives the launcher (make serve): log straight to a file, fixed port required.
            assert port != 0 and log_path is not None
            log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(log_path, "ab") as log_file:
                self.process = subprocess.Popen(
                    cmd, stdout=log_file, stderr=subprocess.STDOUT, env=full_env, start_new_session=True
                )
            self._listening.set()
        else:
            self.process = subprocess.Popen(
                cmd,
                stdin=subprocess.PIPE if stdin_pipe else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=full_env,
                text=True,
                bufsize=1,
            )
            threading.Thread(target=self._read_log, daemon=True).start()

    def _read_log(self) -> None:
        assert self.process.stdout is not None
        log_file = open(self.log_path, "a") if self.log_path else None
        for line in self.process.stdout:
            self._log_lines.append(line)
            if log_file:
                log_file.write(line)
                log_file.flush()
            match = _LISTENING.search(line)
            if match and not self._listening.is_set():
                self.port = int(match.group(2))
                self._listening.set()
        if log_file:
            log_file.close()
        self._listening.set()  # process ended: unblock waiters

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log(self) -> str:
        return "".join(self._log_lines)

    def wait_listening(self, timeout_s: float = 60.0) -> ServiceProcess:
        if not self._listening.wait(timeout_s) or self.port == 0:
            raise ServiceError(f"{self.kind}-service did not start listening:\n{self.log[-3000:]}")
        return self

    def wait_serving(self, timeout_s: float = 300.0) -> ServiceProcess:
        self.wait_listening(timeout_s)
        try:
            wait_serving(self.address, timeout_s)
        except ServiceError as error:
            raise ServiceError(f"{error}\n{self.log[-3000:]}") from error
        return self

    def terminate(self, timeout_s: float = 20.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def _pid_file(kind: str) -> Path:
    return RUN_DIR / f"{kind}.pid"


def _running_pid(kind: str) -> int | None:
    try:
        pid = int(_pid_file(kind).read_text())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def start_all(timeout_s: float = 600.0) -> None:
    started: list[tuple[str, str]] = []
    for kind, info in SERVICES.items():
        port = int(os.environ.get(f"{kind.upper()}_PORT", info.default_port))
        address = f"127.0.0.1:{port}"
        if _running_pid(kind):
            print(f"{kind}-service already running (pid {_running_pid(kind)}) on {address}")
            started.append((kind, address))
            continue
        log_path = RUN_DIR / f"{kind}.log"
        proc = ServiceProcess(kind, port=port, log_path=log_path, detach=True)
        _pid_file(kind).write_text(str(proc.process.pid))
        print(f"{kind}-service starting (pid {proc.process.pid}) on {address}, log: {log_path}")
        started.append((kind, address))
    for kind, address in started:
        print(f"waiting for {kind}-service to report SERVING ...", flush=True)
        try:
            wait_serving(address, timeout_s)
        except ServiceError as error:
            sys.exit(f"{kind}-service failed: {error}; see {RUN_DIR / (kind + '.log')}")
        print(f"{kind}-service SERVING on {address}")
    print("all services up; `make stop` ends them. Logs in .run/*.log")


def stop_all(timeout_s: float = 20.0) -> None:
    for kind in SERVICES:
        pid = _running_pid(kind)
        if pid is None:
            _pid_file(kind).unlink(missing_ok=True)
            continue
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except OSError:
                break
            time.sleep(0.1)  # waiting on a process we did not spawn: no handle to wait on
        else:
            os.kill(pid, signal.SIGKILL)
        _pid_file(kind).unlink(missing_ok=True)
        print(f"{kind}-service stopped (pid {pid})")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m service_runtime.launcher")
    parser.add_argument("command", choices=["start", "stop"])
    args = parser.parse_args(argv)
    RUN_DIR.mkdir(exist_ok=True)
    if args.command == "start":
        start_all()
    else:
        stop_all()


if __name__ == "__main__":
    main()
