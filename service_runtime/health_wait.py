"""Wait for a gRPC server to report SERVING on grpc.health.v1, cancellably."""

from __future__ import annotations

import threading
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service_runtime.tls import ClientTls


class ServiceError(RuntimeError):
    pass


class HealthWait:
    """Wait for a server's grpc.health.v1 status to be SERVING (health Watch, no polling).

    `cancel()` from another thread ends a wait at once with ServiceError: used when the process
    behind the address has died, so there is nothing left to wait for.
    """

    def __init__(self, address: str, service: str = "", tls: ClientTls | None = None) -> None:
        self.address = address
        self.service = service
        # A TLS server needs the client credentials (VOICE_TLS_* when not given).
        self.tls = tls if tls is not None else ClientTls.from_env()
        self._lock = threading.Lock()
        self._channel: grpc.Channel | None = None
        self._cancelled = False

    def _open(self) -> grpc.Channel:
        # One replica, no client-side health checking: this watches the health itself.
        if self.tls is None:
            return grpc.insecure_channel(self.address)
        return grpc.secure_channel(self.address, self.tls.credentials(), self.tls.options())

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = True
            if self._channel is not None:
                self._channel.close()  # interrupts a blocked Watch

    def wait(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while (remaining := deadline - time.monotonic()) > 0:
            with self._lock:
                if self._cancelled:
                    raise ServiceError(f"stopped waiting for {self.address}")
                channel = self._channel = self._open()
            try:
                stub = health_pb2_grpc.HealthStub(channel)
                for reply in stub.Watch(
                    health_pb2.HealthCheckRequest(service=self.service), timeout=remaining, wait_for_ready=True
                ):
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
            except (grpc.RpcError, ValueError) as error:
                if isinstance(error, grpc.RpcError) and error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                    break
                # The server went away mid-watch (e.g. restarting): retry until the deadline.
                time.sleep(0.1)
            finally:
                channel.close()
        if self._cancelled:
            raise ServiceError(f"stopped waiting for {self.address}")
        raise ServiceError(f"{self.address} did not report SERVING within {timeout_s:.0f}s")


def wait_serving(address: str, timeout_s: float, service: str = "", tls: ClientTls | None = None) -> None:
    """Block until the grpc.health.v1 status of `address` is SERVING."""
    HealthWait(address, service, tls).wait(timeout_s)
