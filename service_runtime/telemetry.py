"""One tracer provider per process, OTLP/gRPC export, W3C trace context over gRPC metadata.

Export is off unless OTEL_EXPORTER_OTLP_ENDPOINT is set. Spans go through a batch processor
with short export timeouts, so a missing or slow collector never blocks or fails a turn.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
from collections.abc import Iterator, Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

_log = logging.getLogger(__name__)
_provider: TracerProvider | None = None

# Exporter timeout: a down collector costs at most this per batch, off the request path.
EXPORT_TIMEOUT_S = 2.0


def setup_tracing(default_service_name: str, exporter: SpanExporter | None = None) -> TracerProvider:
    """Install this process's tracer provider. `OTEL_SERVICE_NAME` overrides the name."""
    global _provider
    if _provider is not None:
        return _provider
    service_name = os.environ.get("OTEL_SERVICE_NAME") or default_service_name
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    if exporter is None and os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(timeout=EXPORT_TIMEOUT_S)
    if exporter is not None:
        # Short default delay so traces show up in Jaeger right after a turn; the standard
        # OTEL_BSP_* variables still override it.
        delay_ms = int(os.environ.get("OTEL_BSP_SCHEDULE_DELAY", "200"))
        provider.add_span_processor(
            BatchSpanProcessor(
                exporter, schedule_delay_millis=delay_ms, export_timeout_millis=int(EXPORT_TIMEOUT_S * 1000)
            )
        )
    trace.set_tracer_provider(provider)
    _provider = provider
    return provider


def exporting() -> bool:
    return bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


def shutdown_tracing(timeout_s: float = 3.0) -> None:
    """Flush pending spans (bounded in time) and stop exporting. Call on SIGTERM."""
    global _provider
    if _provider is None:
        return
    try:
        _provider.force_flush(timeout_millis=int(timeout_s * 1000))
        _provider.shutdown()
    except Exception:  # never let telemetry turn a clean exit into a crash
        _log.warning("telemetry flush failed", exc_info=True)
    _provider = None


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)


def outgoing_metadata(span: Span | None = None) -> list[tuple[str, str]]:
    """gRPC metadata carrying the current (or given) span's W3C trace context."""
    carrier: dict[str, str] = {}
    ctx = trace.set_span_in_context(span) if span is not None else None
    propagate.inject(carrier, context=ctx)
    return list(carrier.items())


def incoming_context(metadata: Sequence[Any] | None) -> otel_context.Context:
    """Trace context a client sent in gRPC metadata (empty context when none)."""
    carrier = {str(item[0]).lower(): str(item[1]) for item in (metadata or ())}
    return propagate.extract(carrier)


@contextlib.contextmanager
def server_span(name: str, grpc_context: Any, **attributes: Any) -> Iterator[Span]:
    """A SERVER span whose parent is the caller's span from the gRPC metadata.

    The span is current inside the block (children parent on it). Safe around the `yield`s of
    an async-generator handler: when the client cancels, grpc finalises the generator in
    another contextvars Context, where restoring the previous context is impossible and moot.
    """
    parent = incoming_context(grpc_context.invocation_metadata())
    span = tracer("voice").start_span(name, context=parent, kind=SpanKind.SERVER, attributes=_clean(attributes))
    token = otel_context.attach(trace.set_span_in_context(span, parent))
    try:
        yield span
    except BaseException as error:  # cancellation and aborts end the span too
        span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        raise
    finally:
        span.end()
        _detach_quietly(token)


def _detach_quietly(token: object) -> None:
    if isinstance(token, contextvars.Token):
        try:
            token.var.reset(token)
        except ValueError:
            pass  # created in another Context (generator finalised elsewhere): nothing to restore
    else:
        otel_context.detach(token)  # type: ignore[arg-type]


def _clean(attributes: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in attributes.items() if v is not None}
