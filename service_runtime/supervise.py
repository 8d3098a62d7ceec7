"""Wait for freshly started services to report SERVING, and fail fast when one dies instead.

A service that exits before SERVING (crash, signal, bad flag, missing model, port in use, a
warm-up that returned garbage) is reported at once: which service, its exit code or signal,
the tail of its log and the log's path. The other services this launcher started are stopped,
so a failed start never leaves half a stack running.
"""

from __future__ import annotations

import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from service_runtime.health_wait import HealthWait, ServiceError

LOG_TAIL_LINES = 20
PROGRESS_EVERY_S = 15.0


class StartFailure(ServiceError):
    """A service did not come up; the message names it and carries its log tail."""

    def __init__(self, service: str, message: str) -> None:
        self.service = service
        super().__init__(message)


@dataclass
class Starting:
    """One service being started (process set) or already running (process None)."""

    name: str  # e.g. "llm-service"
    address: str
    log_path: Path
    process: subprocess.Popen[Any] | None = None


def exit_description(returncode: int) -> str:
    """'exit code 1', or 'killed by SIGSEGV (signal 11; a shell shows exit 139)'."""
    if returncode >= 0:
        return f"exit code {returncode}"
    number = -returncode
    try:
        name = signal.Signals(number).name
    except ValueError:
        name = f"signal {number}"
    return f"killed by {name} (signal {number}; a shell shows exit {128 + number})"


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as error:
        return f"(log unreadable: {error})"
    all_lines = text.splitlines()
    tail = all_lines[-lines:]
    # A native crash prints its cause above a long stack: keep that line in view.
    fatal = [line for line in all_lines[:-lines] if line.startswith("Fatal Python error")]
    if fatal:
        tail = [fatal[-1], "...", *tail]
    return "\n".join(f"  | {line}" for line in tail) if tail else "  | (log is empty)"


def serving_line(path: Path) -> str:
    """The details of the service's own 'SERVING on ...' log line (model, source, timings)."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    for line in reversed(lines):
        if "SERVING on " in line:
            return line.split("SERVING on ", 1)[1]
    return ""


def stop_processes(processes: Sequence[subprocess.Popen[Any]], timeout_s: float = 10.0) -> None:
    """SIGTERM all (they drain in parallel), then SIGKILL whatever is still up after `timeout_s`."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for process in processes:
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_all_serving(
    starting: Sequence[Starting], timeout_s: float, out: TextIO = sys.stdout, stop_timeout_s: float = 10.0
) -> None:
    """Return once every service is SERVING; else stop the ones started here and raise StartFailure."""
    events: queue.Queue[tuple[str, Starting, Any]] = queue.Queue()
    waits = [HealthWait(s.address) for s in starting]

    def watch_health(item: Starting, health: HealthWait) -> None:
        try:
            health.wait(timeout_s)
            events.put(("serving", item, None))
        except ServiceError as error:
            events.put(("not serving", item, error))

    def watch_exit(item: Starting, process: subprocess.Popen[Any]) -> None:
        events.put(("exited", item, process.wait()))

    for item, health in zip(starting, waits, strict=True):
        threading.Thread(target=watch_health, args=(item, health), daemon=True).start()
        if item.process is not None:
            threading.Thread(target=watch_exit, args=(item, item.process), daemon=True).start()

    pending = {s.name for s in starting}
    started_at = time.monotonic()
    deadline = started_at + timeout_s
    failure: StartFailure | None = None
    while pending and failure is None:
        remaining = deadline - time.monotonic()
        try:
            kind, item, value = events.get(timeout=max(0.0, min(remaining, PROGRESS_EVERY_S)))
        except queue.Empty:
            if time.monotonic() < deadline:
                waited = time.monotonic() - started_at
                print(f"  still loading after {waited:.0f} s: {', '.join(sorted(pending))}", file=out, flush=True)
                continue
            kind, item, value = "not serving", next(s for s in starting if s.name in pending), None
        if kind == "serving":
            if item.name in pending:
                pending.discard(item.name)
                print(f"{item.name} SERVING on {serving_line(item.log_path) or item.address}", file=out, flush=True)
        elif kind == "exited":
            failure = StartFailure(
                item.name,
                f"{item.name} exited before it was SERVING ({exit_description(value)}).\n"
                f"Last lines of its log {item.log_path}:\n{log_tail(item.log_path)}",
            )
        elif item.name in pending:
            failure = StartFailure(
                item.name,
                f"{item.name} did not report SERVING on {item.address} within {timeout_s:.0f} s "
                f"(still running; raise the timeout if the model is large).\n"
                f"Last lines of its log {item.log_path}:\n{log_tail(item.log_path)}",
            )
    for health in waits:
        health.cancel()
    if failure is not None:
        others = [s for s in starting if s.process is not None]
        names = [s.name for s in others if s.name != failure.service and s.process and s.process.poll() is None]
        stop_processes([s.process for s in others if s.process is not None], stop_timeout_s)
        if names:
            failure.args = (f"{failure.args[0]}\nstopped the others it started: {', '.join(names)}",)
        raise failure
