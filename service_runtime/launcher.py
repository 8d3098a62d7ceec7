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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from service_runtime.config import int_in
from service_runtime.health_wait import ServiceError, wait_serving
from service_runtime.service_table import SERVICES, ServiceInfo
from service_runtime.tls import ClientTls

RUN_DIR = Path(".run")
_LISTENING = re.compile(r"listening on (\S+):(\d+)")


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
        self._log_changed = threading.Condition()
        self._log_ended = False
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
            with self._log_changed:
                self._log_lines.append(line)
                self._log_changed.notify_all()
            if log_file:
                log_file.write(line)
                log_file.flush()
            match = _LISTENING.search(line)
            if match and not self._listening.is_set():
                self.port = int(match.group(2))
                self._listening.set()
        if log_file:
            log_file.close()
        with self._log_changed:
            self._log_ended = True
            self._log_changed.notify_all()
        self._listening.set()  # process ended: unblock waiters

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log(self) -> str:
        return "".join(self._log_lines)

    def wait_for_log(self, predicate: Callable[[str], bool], timeout_s: float = 30.0) -> str:
        """Block until `predicate(log so far)` holds (ServiceError if the log ends or time runs out)."""
        with self._log_changed:
            ok = self._log_changed.wait_for(lambda: predicate(self.log) or self._log_ended, timeout_s)
            if ok and predicate(self.log):
                return self.log
        raise ServiceError(f"{self.kind}-service log never showed what was awaited:\n{self.log[-3000:]}")

    def wait_listening(self, timeout_s: float = 60.0) -> ServiceProcess:
        if not self._listening.wait(timeout_s) or self.port == 0:
            raise ServiceError(f"{self.kind}-service did not start listening:\n{self.log[-3000:]}")
        return self

    def wait_serving(self, timeout_s: float = 300.0, tls: ClientTls | None = None) -> ServiceProcess:
        self.wait_listening(timeout_s)
        try:
            wait_serving(self.address, timeout_s, tls=tls)
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


# Replica i of a service listens on its port + REPLICA_PORT_STEP * i (50051, 50061, ... for STT).
REPLICA_PORT_STEP = 10
MAX_REPLICAS = 9  # keeps replica ports of the three services apart and below 50150


def replica_key(kind: str, index: int) -> str:
    """Stem of a replica's pid and log files: "stt" for replica 0 (as before replicas), "stt-1", ..."""
    return kind if index == 0 else f"{kind}-{index}"


def replica_name(kind: str, index: int, replicas: int) -> str:
    return f"{kind}-service" if replicas == 1 else f"{kind}-service replica {index}"


def target(addresses: Sequence[str]) -> str:
    """A grpc target for one address ("127.0.0.1:50051") or many ("ipv4:127.0.0.1:50051,127.0.0.1:50061")."""
    if len(addresses) == 1:
        return addresses[0]
    return "ipv4:" + ",".join(addresses)


def _pid_file(key: str, run_dir: Path | None = None) -> Path:
    return (run_dir or RUN_DIR) / f"{key}.pid"


def _running_pid(key: str, run_dir: Path | None = None) -> int | None:
    try:
        pid = int(_pid_file(key, run_dir).read_text())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def _replica_keys(kind: str, run_dir: Path) -> list[tuple[str, int]]:
    """(key, replica index) of every pid file of `kind` in run_dir, replica 0 first."""
    found = []
    for path in run_dir.glob(f"{kind}*.pid"):
        match = re.fullmatch(rf"{re.escape(kind)}(?:-(\d+))?", path.stem)
        if match:
            found.append((path.stem, int(match.group(1) or 0)))
    return sorted(found, key=lambda item: item[1])


def start_all(
    timeout_s: float = 600.0,
    services: dict[str, ServiceInfo] | None = None,
    run_dir: Path | None = None,
    out: TextIO = sys.stdout,
    stop_timeout_s: float = 10.0,
    replicas: int = 1,
) -> dict[str, str]:
    """Start `replicas` of each service not already running (detached, logs in run_dir), wait for SERVING.

    Replica i listens on the service's port + 10·i. Returns {kind: grpc target} (one address, or an
    `ipv4:` list naming every replica). Raises StartFailure at once when any replica dies before
    SERVING, after stopping the others started here.
    """
    from service_runtime.supervise import Starting, wait_all_serving

    if not 1 <= replicas <= MAX_REPLICAS:
        raise ValueError(f"replicas must be 1 to {MAX_REPLICAS}, not {replicas}")
    services = services or SERVICES
    run_dir = run_dir or RUN_DIR
    run_dir.mkdir(parents=True, exist_ok=True)
    starting: list[Starting] = []
    targets: dict[str, str] = {}
    for kind, info in services.items():
        base = int(os.environ.get(f"{kind.upper()}_PORT", info.default_port))
        addresses = []
        for index in range(replicas):
            key, name = replica_key(kind, index), replica_name(kind, index, replicas)
            port = base + REPLICA_PORT_STEP * index
            address = f"127.0.0.1:{port}"
            addresses.append(address)
            log_path = run_dir / f"{key}.log"
            pid = _running_pid(key, run_dir)
            if pid:
                print(f"{name} already running (pid {pid}) on {address}", file=out)
                starting.append(Starting(name, address, log_path))
                continue
            log_path.unlink(missing_ok=True)  # the tail shown on failure must be this start's
            proc = ServiceProcess(kind, info.args, port=port, log_path=log_path, detach=True, module=info.module)
            _pid_file(key, run_dir).write_text(str(proc.process.pid))
            print(f"{name} starting (pid {proc.process.pid}) on {address}, log: {log_path}", file=out)
            starting.append(Starting(name, address, log_path, proc.process))
        targets[kind] = target(addresses)
    print("waiting for the models to load and warm up ...", file=out, flush=True)
    try:
        wait_all_serving(starting, timeout_s, out=out, stop_timeout_s=stop_timeout_s)
    except ServiceError:
        for kind in services:
            for key, _ in _replica_keys(kind, run_dir):
                if not _running_pid(key, run_dir):
                    _pid_file(key, run_dir).unlink(missing_ok=True)
        raise
    print(f"all services up; `make stop` ends them. Logs in {run_dir}/*.log", file=out)
    print("targets for the orchestrator, bench and web playground:", file=out)
    for kind, value in targets.items():
        print(f"  export {kind.upper()}_ADDRESS={value}", file=out)
    return targets


def stop_all(
    timeout_s: float = 20.0,
    services: dict[str, ServiceInfo] | None = None,
    run_dir: Path | None = None,
    out: TextIO = sys.stdout,
) -> None:
    """SIGTERM every replica of every service at once (they drain in parallel), SIGKILL after `timeout_s`."""
    run_dir = run_dir or RUN_DIR
    running: list[tuple[str, str, int]] = []  # (key, name, pid)
    for kind in services or SERVICES:
        keys = _replica_keys(kind, run_dir)
        for key, index in keys:
            pid = _running_pid(key, run_dir)
            if pid is None:
                _pid_file(key, run_dir).unlink(missing_ok=True)
                continue
            os.kill(pid, signal.SIGTERM)
            running.append((key, replica_name(kind, index, 2 if len(keys) > 1 else 1), pid))
    deadline = time.monotonic() + timeout_s
    for key, name, pid in running:
        while _running_pid(key, run_dir) and not _reaped(pid) and time.monotonic() < deadline:
            time.sleep(0.1)  # a process `make serve` started: no handle to wait on
        if _running_pid(key, run_dir) and not _reaped(pid):
            os.kill(pid, signal.SIGKILL)
        _pid_file(key, run_dir).unlink(missing_ok=True)
        print(f"{name} stopped (pid {pid})", file=out)


def _reaped(pid: int) -> bool:
    """True once `pid` has exited; reaps it when it is our own child (else a zombie looks alive)."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == pid
    except ChildProcessError:  # not our child: gone when kill(pid, 0) fails
        return False


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m service_runtime.launcher")
    parser.add_argument("command", choices=["start", "stop"])
    parser.add_argument(
        "--replicas",
        type=int_in(1, MAX_REPLICAS),
        default=os.environ.get("REPLICAS") or "1",
        help=f"replicas of each service, 1 to {MAX_REPLICAS}; replica i on port + {REPLICA_PORT_STEP}*i (env REPLICAS)",
    )
    args = parser.parse_args(argv)
    RUN_DIR.mkdir(exist_ok=True)
    if args.command == "start":
        try:
            start_all(replicas=args.replicas)
        except ServiceError as error:
            sys.exit(f"\n{error}\nFix the cause and run `make serve` again (`make stop` clears what is left).")
    else:
        stop_all()


if __name__ == "__main__":
    main()
