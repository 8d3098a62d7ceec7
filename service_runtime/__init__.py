"""Shared runtime for the three model servers: start-up, health, reflection, shutdown, tracing."""

from service_runtime.config import env_default, env_flag
from service_runtime.engine_slot import EngineSlot
from service_runtime.server import ServiceSpec, run_service_cli

__all__ = ["EngineSlot", "ServiceSpec", "env_default", "env_flag", "run_service_cli"]
