"""The gRPC clients of the three services: channels, stubs, health checks and error mapping.

`channel(target)` is the only place a channel is created (TLS, service config or load-balancing
options go there). Errors name the service: `ServiceDownError` when it is gone or not SERVING,
`ServiceCallError` for any other failed call.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from orchestrator.config import SERVICE_NAMES, ServiceAddresses
from service_runtime.channels import Balancing, aio_channel
from service_runtime.tls import ClientTls
from voice.llm.v1 import llm_pb2_grpc
from voice.stt.v1 import stt_pb2_grpc
from voice.tts.v1 import tts_pb2_grpc

CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]


# The LLM keeps each conversation's KV cache: its turns prefer one replica (ring hash on the
# session id); STT and TTS streams go to any healthy replica in turn.
BALANCING = {"stt": Balancing.ROUND_ROBIN, "llm": Balancing.AFFINITY, "tts": Balancing.ROUND_ROBIN}


def channel(
    target: str,
    tls: ClientTls | None = None,
    balancing: Balancing = Balancing.ROUND_ROBIN,
    health_checked: bool = True,
) -> grpc.aio.Channel:
    """A channel to `target`: `host:port`, or replicas (`ipv4:h:p,h:p`, `dns:///name:port`).

    With several replicas, grpc balances the calls and checks each replica's health itself: one
    that is NOT_SERVING or gone gets no calls (service_runtime.channels).
    """
    return aio_channel(target, tls, balancing, CHANNEL_OPTIONS, health_checked)


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


def service_error(kind: str, address: str, error: grpc.RpcError) -> Exception:
    """An error naming the service: ServiceDownError when it is gone, else ServiceCallError."""
    down = error_from_rpc(kind, address, error)
    return down if down is not None else ServiceCallError(kind, address, error)


class Clients:
    """One channel and stub per service for a conversation; `error()` maps a failed call."""

    def __init__(self, addresses: ServiceAddresses) -> None:
        self.addresses = addresses
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._stt: stt_pb2_grpc.SpeechToTextStub | None = None
        self._llm: llm_pb2_grpc.LanguageModelStub | None = None
        self._tts: tts_pb2_grpc.TextToSpeechStub | None = None

    def connect(self) -> None:
        """Open the channels (once; again after close())."""
        if self._channels:
            return
        self._channels = {
            kind: channel(address, self.addresses.tls, BALANCING[kind]) for kind, address in self.addresses.items()
        }
        self._stt = stt_pb2_grpc.SpeechToTextStub(self._channels["stt"])
        self._llm = llm_pb2_grpc.LanguageModelStub(self._channels["llm"])
        self._tts = tts_pb2_grpc.TextToSpeechStub(self._channels["tts"])

    @property
    def connected(self) -> bool:
        return bool(self._channels)

    @property
    def stt(self) -> stt_pb2_grpc.SpeechToTextStub:
        assert self._stt is not None, "connect() first"
        return self._stt

    @property
    def llm(self) -> llm_pb2_grpc.LanguageModelStub:
        assert self._llm is not None, "connect() first"
        return self._llm

    @property
    def tts(self) -> tts_pb2_grpc.TextToSpeechStub:
        assert self._tts is not None, "connect() first"
        return self._tts

    def error(self, kind: str, error: grpc.RpcError) -> Exception:
        return service_error(kind, dict(self.addresses.items())[kind], error)

    async def ended_call_error(self, kind: str, call: Any) -> Exception:
        """The error of a streaming call found already ended under a write (e.g. its server died)."""
        code, details = await call.code(), await call.details()
        return self.error(kind, grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details))

    async def close(self) -> None:
        for open_channel in self._channels.values():
            await open_channel.close()
        self._channels = {}
        self._stt = self._llm = self._tts = None


async def check_service(kind: str, address: str, timeout_s: float = 2.0, tls: ClientTls | None = None) -> None:
    """Raise ServiceDownError unless grpc.health.v1 at `address` answers SERVING within `timeout_s`.

    For a target naming several replicas: unless at least one of them is SERVING.
    """
    several = address.startswith(("ipv4:", "ipv6:", "dns:")) or "," in address
    # One address: ask it at once (a refused connection fails the call right away instead of
    # waiting out the timeout) and tell "loading" from "gone". Replicas: a health-checked channel
    # is ready once one replica is SERVING, and the Check goes to such a one.
    async with channel(address, tls, health_checked=several) as health_channel:
        if several:
            try:
                await asyncio.wait_for(health_channel.channel_ready(), timeout_s)
            except (asyncio.TimeoutError, grpc.RpcError):
                raise ServiceDownError(kind, address) from None
        stub = health_pb2_grpc.HealthStub(health_channel)
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout_s)
        except grpc.RpcError as error:
            if error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise ServiceDownError(kind, address) from None  # nothing listening / unreachable
            raise ServiceDownError(kind, address, f"not answering health checks ({error.code().name})") from None
        if reply.status != health_pb2.HealthCheckResponse.SERVING:
            raise ServiceDownError(kind, address, "up but not SERVING yet (still loading its model?)")


async def check_services(addresses: ServiceAddresses, timeout_s: float = 2.0) -> None:
    """Check all three at once; raises the first (in chain order) that is down."""
    results = await asyncio.gather(
        *(check_service(kind, address, timeout_s, addresses.tls) for kind, address in addresses.items()),
        return_exceptions=True,
    )
    for result in results:
        if isinstance(result, BaseException):
            raise result
