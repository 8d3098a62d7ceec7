"""Shared runtime for the three model servers: start-up, health, reflection, shutdown, tracing,
flags with env fallbacks, call admission (caps) and the single model worker."""

from service_runtime.admission import Admission, Gate
from service_runtime.config import EnvFlags
from service_runtime.engine_slot import EngineSlot
from service_runtime.server import ServiceSpec, run_service_cli

__all__ = ["Admission", "EngineSlot", "EnvFlags", "Gate", "ServiceSpec", "run_service_cli"]
