"""An in-test OTLP/gRPC trace collector: a real `TraceService` server on a loopback port.

Processes under test export to it through OTEL_EXPORTER_OTLP_ENDPOINT exactly as they would
to Jaeger; tests then wait (on a condition variable, not a sleep) for the spans they expect.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


@dataclass
class CollectedSpan:
    service_name: str
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any] = field(default_factory=dict)
    events: list[str] = field(default_factory=list)
    kind: int = 0


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


class OtlpCollector(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, delay_s: float = 0.0) -> None:
        self.spans: list[CollectedSpan] = []
        self._changed = threading.Condition()
        self.delay_s = delay_s  # > 0 simulates a slow collector (may be changed while running)
        self._server: grpc.Server | None = None
        self.port = 0

    # -- gRPC ---------------------------------------------------------------------------
    def Export(self, request: Any, context: Any) -> Any:
        if self.delay_s:
            time.sleep(self.delay_s)
        received: list[CollectedSpan] = []
        for resource_spans in request.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            service = str(resource.get("service.name", ""))
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    received.append(
                        CollectedSpan(
                            service_name=service,
                            name=span.name,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            start_ns=span.start_time_unix_nano,
                            end_ns=span.end_time_unix_nano,
                            attributes={a.key: _value(a.value) for a in span.attributes},
                            events=[e.name for e in span.events],
                            kind=span.kind,
                        )
                    )
        with self._changed:
            self.spans.extend(received)
            self._changed.notify_all()
        return trace_service_pb2.ExportTraceServiceResponse()

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> OtlpCollector:
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(0)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- queries --------------------------------------------------------------------------
    def wait_for(
        self, predicate: Callable[[list[CollectedSpan]], bool], timeout_s: float = 30.0
    ) -> list[CollectedSpan]:
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while not predicate(self.spans):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    names = sorted({(s.service_name, s.name) for s in self.spans})
                    raise AssertionError(f"spans not received within {timeout_s}s; have {names}")
                self._changed.wait(remaining)
            return list(self.spans)

    def named(self, name: str) -> list[CollectedSpan]:
        with self._changed:
            return [s for s in self.spans if s.name == name]
