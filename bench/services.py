"""Start the three services for the benchmark (or attach to running ones); load time and memory."""

from __future__ import annotations

import concurrent.futures
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service_runtime.launcher import RUN_DIR, SERVICES, ServiceProcess, wait_serving

KINDS = ("stt", "llm", "tts")
# Second llm-services started for a compared mode (their address keys in ServiceSet):
# --compare-burst (the idle-core burst on) and --compare-llm-model (another model).
LLM_BURST = "llm-burst"
LLM_MODEL = "llm-model"
_SERVING = re.compile(r"SERVING on (\S+):(\d+)(.*)$", re.MULTILINE)
_KV = re.compile(r"(\w+)=(\S+)")


def parse_serving_line(log: str) -> dict[str, str]:
    """key=value pairs of the service's start-up line 'SERVING on host:port k=v ...' ({} when absent)."""
    matches = list(_SERVING.finditer(log))
    if not matches:
        return {}
    return dict(_KV.findall(matches[-1].group(3)))


def read_rss_kib(pid: int) -> dict[str, int | None]:
    """Resident memory of a process now (VmRSS) and at its peak (VmHWM), in KiB (Linux /proc)."""
    out: dict[str, int | None] = {"rss_kib": None, "peak_rss_kib": None}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            out["rss_kib"] = int(line.split()[1])
        elif line.startswith("VmHWM:"):
            out["peak_rss_kib"] = int(line.split()[1])
    return out


@dataclass
class Service:
    kind: str
    address: str
    process: ServiceProcess | None = None  # None: attached to a running service
    pid: int | None = None
    serving_info: dict[str, str] = field(default_factory=dict)

    def log(self) -> str:
        if self.process is not None:
            return self.process.log
        path = RUN_DIR / f"{self.kind}.log"  # `make serve` logs
        try:
            return path.read_text(errors="replace")
        except OSError:
            return ""

    def refresh_info(self) -> dict[str, str]:
        self.serving_info = parse_serving_line(self.log())
        return self.serving_info

    def memory(self) -> dict[str, int | None]:
        if self.pid is None:
            return {"rss_kib": None, "peak_rss_kib": None}
        return read_rss_kib(self.pid)


class ServiceSet:
    """The three services: started as subprocesses on free ports, or attached by address."""

    def __init__(self, services: dict[str, Service]) -> None:
        self.services = services

    @property
    def addresses(self) -> dict[str, str]:
        return {kind: s.address for kind, s in self.services.items()}

    @classmethod
    def start(
        cls,
        out_dir: Path,
        extra_args: dict[str, list[str]] | None = None,
        timeout_s: float = 600.0,
        llm_variants: dict[str, list[str]] | None = None,
    ) -> ServiceSet:
        """Start all three at once (they load in parallel), then wait for each to report SERVING.
        `llm_variants` adds more llm-services: address key -> flags added to the llm's."""
        out_dir.mkdir(parents=True, exist_ok=True)
        services: dict[str, Service] = {}
        variants = [(kind, kind, (extra_args or {}).get(kind, [])) for kind in KINDS]
        for key, flags in (llm_variants or {}).items():
            variants.append((key, "llm", [*(extra_args or {}).get("llm", []), *flags]))
        for key, kind, args in variants:
            log_path = out_dir / f"{key}.log"
            log_path.write_text("")
            proc = ServiceProcess(kind, args=args, port=0, log_path=log_path)
            services[key] = Service(kind, "", process=proc, pid=proc.process.pid)
        result = cls(services)
        try:
            with concurrent.futures.ThreadPoolExecutor(len(services)) as pool:
                waits = {
                    kind: pool.submit(s.process.wait_serving, timeout_s) for kind, s in services.items() if s.process
                }
                for kind, fut in waits.items():
                    fut.result()
                    services[kind].address = services[kind].process.address  # type: ignore[union-attr]
                    services[kind].refresh_info()
        except BaseException:
            result.stop()
            raise
        return result

    @classmethod
    def attach(cls, addresses: dict[str, str], timeout_s: float = 60.0) -> ServiceSet:
        """Use services that are already running (e.g. `make serve`); pids from .run/<kind>.pid when present."""
        services: dict[str, Service] = {}
        for kind in KINDS:
            address = (
                addresses.get(kind)
                or f"127.0.0.1:{os.environ.get(f'{kind.upper()}_PORT', SERVICES[kind].default_port)}"
            )
            wait_serving(address, timeout_s)
            pid: int | None = None
            try:
                pid = int((RUN_DIR / f"{kind}.pid").read_text())
            except (OSError, ValueError):
                pid = None
            svc = Service(kind, address, pid=pid)
            svc.refresh_info()
            services[kind] = svc
        return cls(services)

    def describe(self) -> dict[str, Any]:
        """Per service: address, backend/model/path and load_s from its SERVING line, memory now."""
        out: dict[str, Any] = {}
        for kind, svc in self.services.items():
            info = svc.refresh_info()
            load_s = info.get("load_s")
            out[kind] = {
                "address": svc.address,
                "pid": svc.pid,
                "started_by_bench": svc.process is not None,
                "load_s": float(load_s) if load_s else None,
                "serving_line": info,
                **svc.memory(),
            }
        return out

    def stop(self) -> dict[str, int | None]:
        codes: dict[str, int | None] = {}
        for kind, svc in self.services.items():
            if svc.process is not None:
                codes[kind] = svc.process.terminate()
        return codes
