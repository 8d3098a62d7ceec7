"""Shared runtime for the three model servers: start-up, health, reflection, shutdown, tracing."""

from service_runtime.config import EnvFlags
from service_runtime.engine_slot import EngineSlot
from service_runtime.server import ServiceSpec, run_service_cli

__all__ = ["EngineSlot", "EnvFlags", "ServiceSpec", "run_service_cli"]
