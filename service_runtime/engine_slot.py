"""Holds a service's engine once loaded; calls before that get UNAVAILABLE.

The server starts listening before the model loads so that health checks can report
NOT_SERVING during the load; servicers fetch the engine through this slot.
"""

from __future__ import annotations

from typing import Generic, TypeVar

import grpc

EngineT = TypeVar("EngineT")


class EngineSlot(Generic[EngineT]):
    def __init__(self, service_name: str) -> None:
        self._service_name = service_name
        self._engine: EngineT | None = None

    def set(self, engine: EngineT) -> None:
        self._engine = engine

    @property
    def engine(self) -> EngineT | None:
        return self._engine

    async def get(self, context: grpc.aio.ServicerContext) -> EngineT:
        if self._engine is None:
            await context.abort(
                grpc.StatusCode.UNAVAILABLE,
                f"{self._service_name} is still loading its model; retry when grpc.health.v1 reports SERVING",
            )
        assert self._engine is not None
        return self._engine
