"""Call admission (service_runtime.admission) on an in-process grpc.aio server with plain handlers:
the cap refuses at once with RESOURCE_EXHAUSTED, counters follow, a cancelled call frees its slot
only after its handler has cleaned up, and methods without a gate are not touched."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from service_runtime.admission import Admission

WAIT_S = 10.0
SERVICE = "test.Work"


class Handlers:
    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.started = asyncio.Queue[str]()
        self.cleaned_up: list[str] = []

    async def unary(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        await self.started.put("unary")
        await self.release.wait()
        return request

    async def stream(self, request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        await self.started.put("stream")
        try:
            yield b"first"
            await self.release.wait()
            yield b"second"
        finally:
            self.cleaned_up.append("stream")

    async def writer(self, request: bytes, context: grpc.aio.ServicerContext) -> None:  # context.write style
        await self.started.put("writer")
        await context.write(b"written")
        await self.release.wait()

    async def open(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return b"no gate"


def method(kind: str, handler: object) -> grpc.RpcMethodHandler:
    factory = grpc.unary_unary_rpc_method_handler if kind == "unary" else grpc.unary_stream_rpc_method_handler
    return factory(handler)


async def _scenario() -> None:
    admission = Admission()
    gate = admission.gate(SERVICE, ["Unary", "Stream", "Writer"], 2, "{active} busy, limit --max-work={cap}")
    handlers = Handlers()
    server = grpc.aio.server(interceptors=[admission])
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                SERVICE,
                {
                    "Unary": method("unary", handlers.unary),
                    "Stream": method("stream", handlers.stream),
                    "Writer": method("stream", handlers.writer),
                    "Open": method("unary", handlers.open),
                },
            )
        ]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            unary = channel.unary_unary(f"/{SERVICE}/Unary")
            stream = channel.unary_stream(f"/{SERVICE}/Stream")
            writer = channel.unary_stream(f"/{SERVICE}/Writer")
            open_ = channel.unary_unary(f"/{SERVICE}/Open")

            streaming = stream(b"", timeout=WAIT_S)
            assert await streaming.read() == b"first"
            written = writer(b"", timeout=WAIT_S)
            assert await written.read() == b"written"
            assert (gate.active, gate.total) == (2, 2)

            for refused in (unary(b"x", timeout=WAIT_S), stream(b"", timeout=WAIT_S), writer(b"", timeout=WAIT_S)):
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    if isinstance(refused, grpc.aio.UnaryUnaryCall):
                        await refused
                    else:
                        await refused.read()
                assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert info.value.details() == "2 busy, limit --max-work=2; retry later"
            assert await open_(b"", timeout=WAIT_S) == b"no gate"
            assert handlers.started.qsize() == 2, "a refused call never reaches its handler"

            streaming.cancel()
            # The slot is free only once the handler's own clean-up has run.
            for _ in range(int(WAIT_S / 0.01)):
                if gate.active == 1:
                    break
                await asyncio.sleep(0.01)  # bounded polling of a counter, with a deadline
            assert gate.active == 1 and handlers.cleaned_up == ["stream"]

            admitted = unary(b"again", timeout=WAIT_S)
            handlers.release.set()
            assert await admitted == b"again"
            assert await written.read() is grpc.aio.EOF
            assert (gate.active, gate.total) == (0, 3)
    finally:
        await server.stop(0)


def test_caps_refuse_at_once_count_calls_and_free_slots_after_clean_up() -> None:
    asyncio.run(_scenario())
