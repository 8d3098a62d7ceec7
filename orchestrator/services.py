"""Is each service up? A clear one-line answer instead of a gRPC traceback."""

from __future__ import annotations

import asyncio

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from orchestrator.config import SERVICE_NAMES, ServiceAddresses


class ServiceDownError(RuntimeError):
    """A service is not reachable or not serving; the message says which, where and what to do."""

    def __init__(self, kind: str, address: str, detail: str = "not reachable") -> None:
        self.kind = kind
        self.address = address
        name = SERVICE_NAMES.get(kind, kind)
        super().__init__(
            f"{name} is {detail} at {address}: start the services with `make serve` "
            f"(or point --{kind}-address / {kind.upper()}_ADDRESS at a running {name})"
        )


class ServiceCallError(RuntimeError):
    """A call to a service failed for another reason than the service being down."""

    def __init__(self, kind: str, address: str, error: grpc.RpcError) -> None:
        self.kind = kind
        self.address = address
        self.code = error.code() if hasattr(error, "code") else None
        details = error.details() if hasattr(error, "details") else str(error)
        code = self.code.name if self.code is not None else "ERROR"
        super().__init__(f"{SERVICE_NAMES.get(kind, kind)} at {address} failed: {code}: {details}")


def error_from_rpc(kind: str, address: str, error: grpc.RpcError) -> ServiceDownError | None:
    """A ServiceDownError when `error` means the service is gone, else None."""
    code = error.code() if hasattr(error, "code") else None
    if code == grpc.StatusCode.UNAVAILABLE:
        details = error.details() if hasattr(error, "details") else ""
        if details and "loading" in details:
            return ServiceDownError(kind, address, "still loading its model (not SERVING yet)")
        return ServiceDownError(kind, address)
    return None


async def check_service(kind: str, address: str, timeout_s: float = 2.0) -> None:
    """Raise ServiceDownError unless grpc.health.v1 at `address` answers SERVING within `timeout_s`."""
    async with grpc.aio.insecure_channel(address) as channel:
        try:
            await asyncio.wait_for(channel.channel_ready(), timeout_s)
        except (asyncio.TimeoutError, grpc.RpcError):
            raise ServiceDownError(kind, address) from None
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout_s)
        except grpc.RpcError as error:
            raise ServiceDownError(kind, address, f"not answering health checks ({error.code().name})") from None
        if reply.status != health_pb2.HealthCheckResponse.SERVING:
            raise ServiceDownError(kind, address, "up but not SERVING yet (still loading its model?)")


async def check_services(addresses: ServiceAddresses, timeout_s: float = 2.0) -> None:
    """Check all three at once; raises the first (in chain order) that is down."""
    results = await asyncio.gather(
        *(check_service(kind, address, timeout_s) for kind, address in addresses.items()), return_exceptions=True
    )
    for result in results:
        if isinstance(result, BaseException):
            raise result
