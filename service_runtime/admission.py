"""Call admission at the door: a cap per group of RPCs, enforced by one gRPC server interceptor.

    admission = Admission()                         # grpc.aio.server(interceptors=[admission])
    refusal = "too many synthesis streams: {active} active, limit --max-streams={cap}"
    streams = admission.gate("voice.tts.v1.TextToSpeech", ["Synthesize", "StreamingSynthesize"], 4, refusal)
    streams.active, streams.total                   # for GetStats

A call that finds its gate full ends at once with RESOURCE_EXHAUSTED and the refusal message,
before its handler runs (no model work, no session created). An admitted call counts as
active until its handler has finished, whatever ends it (reply, error, client cancel): the
handler's own clean-up runs first, so a freed slot means the call's work has stopped.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import grpc


class Gate:
    """At most `cap` calls at once; `active` now, `total` admitted since start."""

    def __init__(self, cap: int, refusal: str) -> None:
        self.cap = cap
        self.active = 0
        self.total = 0
        self._refusal = refusal

    def enter(self) -> str | None:
        """Admit a call (None), or the message saying why not."""
        if self.active >= self.cap:
            return f"{self._refusal.format(active=self.active, cap=self.cap)}; retry later"
        self.active += 1
        self.total += 1
        return None

    def leave(self) -> None:
        self.active -= 1


class Admission(grpc.aio.ServerInterceptor):
    """The server's interceptor: calls to a gated method pass through its Gate; others untouched."""

    def __init__(self) -> None:
        self._gates: dict[str, Gate] = {}

    def gate(self, service: str, methods: Iterable[str], cap: int, refusal: str) -> Gate:
        """One cap shared by `methods` of `service` (its full name, e.g. 'voice.stt.v1.SpeechToText').

        `refusal` says why a call is refused; it may use {active} and {cap}.
        """
        gate = Gate(cap, refusal)
        for method in methods:
            path = f"/{service}/{method}"  # what the interceptor sees
            if path in self._gates:
                raise ValueError(f"{path} already has a gate")
            self._gates[path] = gate
        return gate

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        gate = self._gates.get(handler_call_details.method)
        if handler is None or gate is None:
            return handler
        return _guarded(handler, gate)


async def _admit(gate: Gate, context: grpc.aio.ServicerContext) -> None:
    refusal = gate.enter()
    if refusal is not None:
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, refusal)


def _guarded(handler: grpc.RpcMethodHandler, gate: Gate) -> grpc.RpcMethodHandler:
    """The same handler with the gate around its behaviour (async generator or coroutine alike)."""
    if handler.request_streaming and handler.response_streaming:
        behavior, factory = handler.stream_stream, grpc.stream_stream_rpc_method_handler
    elif handler.request_streaming:
        behavior, factory = handler.stream_unary, grpc.stream_unary_rpc_method_handler
    elif handler.response_streaming:
        behavior, factory = handler.unary_stream, grpc.unary_stream_rpc_method_handler
    else:
        behavior, factory = handler.unary_unary, grpc.unary_unary_rpc_method_handler

    async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        await _admit(gate, context)
        responses = behavior(request, context)
        try:
            async for response in responses:
                yield response
        finally:
            try:
                await responses.aclose()  # the handler's clean-up now, not when the generator is collected
            finally:
                gate.leave()

    async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await _admit(gate, context)
        try:
            return await behavior(request, context)
        finally:
            gate.leave()

    wrapped = stream if inspect.isasyncgenfunction(behavior) else call
    return factory(
        wrapped, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
    )
