"""`make serve` / `orchestrator demo` start-up: a service that dies or never becomes SERVING is
reported at once by name, with its exit status and log tail, and the others are stopped.

Stand-in services (tests/fake_runtime_service.py on the real shared runtime, FAKE engine) play
the failing one; the test timeouts are far below the launcher's wait, so a launcher that waited
instead of noticing the death would fail them.
"""

from __future__ import annotations

import io
import os
import re
import socket
from pathlib import Path

import pytest

from service_runtime.launcher import ServiceInfo, start_all, stop_all
from service_runtime.supervise import StartFailure, exit_description

STAND_IN = "tests.fake_runtime_service"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stack(failing: str, failing_args: tuple[str, ...]) -> dict[str, ServiceInfo]:
    """stt/llm/tts stand-ins that load at once, except `failing`, which gets `failing_args`."""
    return {
        kind: ServiceInfo(kind, STAND_IN, _free_port(), failing_args if kind == failing else ("--on-load", "serve"))
        for kind in ("stt", "llm", "tts")
    }


def _started_pids(printed: str) -> dict[str, int]:
    return {kind: int(pid) for kind, pid in re.findall(r"(\w+)-service starting \(pid (\d+)\)", printed)}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


@pytest.fixture(autouse=True)
def _no_port_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for kind in ("STT", "LLM", "TTS"):
        monkeypatch.delenv(f"{kind}_PORT", raising=False)


@pytest.mark.timeout(90)
@pytest.mark.parametrize(
    ("args", "status", "log_says"),
    [
        (("--on-load", "segfault"), "killed by SIGSEGV (signal 11; a shell shows exit 139)", "Segmentation fault"),
        (("--on-load", "serve", "--fail-load"), "exit code 1", "fake model file is corrupt"),
        (("--on-load", "serve", "--no-such-flag"), "exit code 2", "unrecognized arguments: --no-such-flag"),
    ],
    ids=["native-crash", "load-raises", "bad-flag"],
)
def test_a_service_that_dies_during_start_up_is_named_with_its_log_and_the_others_are_stopped(
    tmp_path: Path, args: tuple[str, ...], status: str, log_says: str
) -> None:
    printed = io.StringIO()
    with pytest.raises(StartFailure) as failure:
        # The wait allows 10 minutes, as for real models; the test's own limit is 90 s.
        start_all(timeout_s=600, services=_stack("llm", args), run_dir=tmp_path, out=printed, stop_timeout_s=5)
    message = str(failure.value)
    assert failure.value.service == "llm-service"
    assert message.startswith(f"llm-service exited before it was SERVING ({status})")
    assert str(tmp_path / "llm.log") in message
    assert log_says in message  # the log tail is in the report
    pids = _started_pids(printed.getvalue())
    assert set(pids) == {"stt", "llm", "tts"}
    assert not any(_alive(pid) for pid in pids.values()), "stand-ins left running after a failed start"
    assert not list(tmp_path.glob("*.pid")), "pid files left for stopped services"


@pytest.mark.timeout(90)
def test_a_service_that_never_becomes_serving_is_reported_after_the_timeout_and_all_are_stopped(
    tmp_path: Path,
) -> None:
    printed = io.StringIO()
    with pytest.raises(StartFailure) as failure:
        # The hanging stand-in ignores SIGTERM while it "loads" (as a stuck model load does): it is
        # killed once stop_timeout_s has passed.
        start_all(
            timeout_s=5, services=_stack("tts", ("--on-load", "hang")), run_dir=tmp_path, out=printed, stop_timeout_s=1
        )
    message = str(failure.value)
    assert failure.value.service == "tts-service"
    assert "did not report SERVING" in message and "within 5 s" in message
    assert "health NOT_SERVING until the model is loaded" in message  # its log tail
    assert "stt-service SERVING" in printed.getvalue() and "llm-service SERVING" in printed.getvalue()
    assert not any(_alive(pid) for pid in _started_pids(printed.getvalue()).values())


@pytest.mark.timeout(90)
def test_healthy_services_start_and_report_where_they_serve(tmp_path: Path) -> None:
    printed = io.StringIO()
    services = _stack("none", ())
    try:
        addresses = start_all(timeout_s=60, services=services, run_dir=tmp_path, out=printed)
        assert addresses == {kind: f"127.0.0.1:{info.default_port}" for kind, info in services.items()}
        for kind in ("stt", "llm", "tts"):
            # the service's own SERVING line: address and what it loaded
            assert re.search(
                rf"{kind}-service SERVING on 127\.0\.0\.1:\d+ backend=fake model=fake-voice", printed.getvalue()
            )
    finally:
        stop_all(timeout_s=10, services=services, run_dir=tmp_path)
    assert not any(_alive(pid) for pid in _started_pids(printed.getvalue()).values())


def test_exit_descriptions_name_the_signal_the_way_a_shell_would() -> None:
    assert exit_description(1) == "exit code 1"
    assert exit_description(-9) == "killed by SIGKILL (signal 9; a shell shows exit 137)"


def _free_base_port(replicas: int, taken: set[int]) -> int:
    """A port p with p, p+10, ... p+10*(replicas-1) all free (and not handed out already)."""
    while True:
        base = _free_port()
        ports = [base + 10 * i for i in range(replicas)]
        if base + 10 * replicas < 65536 and not taken & set(ports) and all(_port_free(p) for p in ports):
            taken.update(ports)
            return base


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _replica_stack(replicas: int) -> dict[str, ServiceInfo]:
    taken: set[int] = set()
    return {
        kind: ServiceInfo(kind, STAND_IN, _free_base_port(replicas, taken), ("--on-load", "serve"))
        for kind in ("stt", "llm", "tts")
    }


@pytest.mark.timeout(120)
def test_replicas_start_on_port_plus_10_i_print_their_targets_and_stop_all_ends_every_one(tmp_path: Path) -> None:
    printed, stopped = io.StringIO(), io.StringIO()
    services = _replica_stack(2)
    try:
        targets = start_all(timeout_s=60, services=services, run_dir=tmp_path, out=printed, replicas=2)
    finally:
        stop_all(timeout_s=10, services=services, run_dir=tmp_path, out=stopped)
    text = printed.getvalue()
    for kind, info in services.items():
        base = info.default_port
        assert targets[kind] == f"ipv4:127.0.0.1:{base},127.0.0.1:{base + 10}"
        assert f"export {kind.upper()}_ADDRESS={targets[kind]}" in text
        for i in (0, 1):
            assert re.search(rf"{kind}-service replica {i} SERVING on 127\.0\.0\.1:{base + 10 * i} ", text)
            assert f"{kind}-service replica {i} stopped" in stopped.getvalue()
    pids = re.findall(r"replica \d starting \(pid (\d+)\)", text)
    assert len(pids) == 6
    assert not any(_alive(int(pid)) for pid in pids)
    assert not list(tmp_path.glob("*.pid"))


@pytest.mark.timeout(90)
def test_a_replica_that_cannot_start_is_named_and_every_other_replica_is_stopped(tmp_path: Path) -> None:
    printed = io.StringIO()
    services = _replica_stack(2)
    busy_port = services["llm"].default_port + 10
    with socket.socket() as squatter:  # replica 1 of llm finds its port taken
        squatter.bind(("127.0.0.1", busy_port))
        squatter.listen()
        with pytest.raises(StartFailure) as failure:
            start_all(timeout_s=600, services=services, run_dir=tmp_path, out=printed, stop_timeout_s=5, replicas=2)
    message = str(failure.value)
    assert failure.value.service == "llm-service replica 1"
    assert message.startswith("llm-service replica 1 exited before it was SERVING (exit code 2)")
    assert f"could not bind 127.0.0.1:{busy_port}" in message
    pids = re.findall(r"replica \d starting \(pid (\d+)\)", printed.getvalue())
    assert len(pids) == 6
    assert not any(_alive(int(pid)) for pid in pids), "replicas left running after a failed start"
    assert not list(tmp_path.glob("*.pid"))


def test_replica_counts_outside_1_to_9_are_refused() -> None:
    with pytest.raises(ValueError, match="replicas must be 1 to 9"):
        start_all(replicas=0)
