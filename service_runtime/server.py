"""gRPC server lifecycle shared by the STT, LLM and TTS services.

Start-up order: listen first with health NOT_SERVING, load (and warm up) the model in a
worker thread, then flip health to SERVING. SIGTERM/SIGINT: health NOT_SERVING, new calls
refused with UNAVAILABLE, in-flight calls get `--grace-s`, spans flushed, exit code 0.

Tests only: with VOICE_TEST_HOLD_LOAD=1 the load waits for one line on stdin (`HOLD_LOAD_ENV`), so a
test can watch a real service NOT_SERVING for as long as it needs, then let the model load.
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from service_runtime import telemetry
from service_runtime.admission import Admission
from service_runtime.config import TRUE_WORDS, EnvFlags, float_in, int_in
from service_runtime.service_table import SERVICES
from service_runtime.tls import ServerTls, TlsConfigError, add_server_arguments

MIB = 1024 * 1024
# Tests only (see the module docstring): the model load waits for a line on stdin. With stdin at
# its end (ServiceProcess gives a service /dev/null unless asked for a pipe) it goes ahead at once.
HOLD_LOAD_ENV = "VOICE_TEST_HOLD_LOAD"
MAX_PORT = 65535

# A loader runs in a worker thread, loads and warms the model, hands the engine to the
# servicers (via their EngineSlot) and returns what to print in the start-up log.
ModelLoader = Callable[[], Mapping[str, Any]]


@dataclass(frozen=True)
class ServiceSpec:
    """One model server: `kind` "stt" is the process "stt-service" (also its OpenTelemetry
    service.name), reads STT_HOST, STT_PORT, ... and listens by default on the launcher's port."""

    kind: str
    grpc_service_names: Sequence[str]  # full names, for health and reflection
    add_arguments: Callable[[EnvFlags], None]  # the service's own flags
    # Registers the servicers on the (not yet started) server, their caps on the server's
    # Admission interceptor, and returns the model loader.
    create: Callable[[argparse.Namespace, grpc.aio.Server, Admission], ModelLoader]
    description: str = ""
    default_port: int | None = None  # None: SERVICES[kind].default_port (the launcher's table)
    # Checks between flags once all are parsed (e.g. one limit not above another): raises
    # ValueError with a message naming the flags, which becomes a usage error (exit status 2).
    check_arguments: Callable[[argparse.Namespace], None] | None = None

    @property
    def name(self) -> str:
        return f"{self.kind}-service"

    @property
    def env_prefix(self) -> str:
        return self.kind.upper()

    @property
    def port(self) -> int:
        return SERVICES[self.kind].default_port if self.default_port is None else self.default_port

    def main(self, argv: Sequence[str] | None = None) -> None:
        """The console entry point: parse flags, serve until SIGTERM, exit with the server's code."""
        run_service_cli(self, argv)


def build_parser(spec: ServiceSpec) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=spec.name, description=spec.description)
    flags = EnvFlags(parser, spec.env_prefix)
    flags.add("--host", "127.0.0.1", "bind address")
    flags.add("--port", spec.port, "port, 0 = any free", type=int_in(0, MAX_PORT))
    flags.add("--grace-s", 5.0, "seconds in-flight calls get on shutdown", type=float_in(0))
    flags.add(
        "--max-message-mib",
        4.0,
        "largest request message accepted, MiB (larger: RESOURCE_EXHAUSTED)",
        type=float_in(0, 2047, low_open=True),  # grpc takes the byte count as a C int
    )
    flags.add("--log-level", "INFO", "DEBUG, INFO, WARNING or ERROR")
    add_server_arguments(flags)
    flags.add(
        "--health-port",
        -1,
        "also serve grpc.health.v1 alone, in plaintext, on this port (for probes that cannot speak TLS, "
        "e.g. Kubernetes grpc probes); -1 = off, 0 = any free",
        type=int_in(-1, MAX_PORT),
    )
    spec.add_arguments(flags)
    return parser


def parse_arguments(spec: ServiceSpec, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The flags (environment fallbacks included), each in its range and consistent with the others;
    a bad value exits with a usage error (status 2) before anything loads."""
    parser = build_parser(spec)
    args = parser.parse_args(argv)
    if spec.check_arguments is not None:
        try:
            spec.check_arguments(args)
        except ValueError as error:
            parser.error(str(error))
    return args


def server_options(max_message_bytes: int) -> list[tuple[str, Any]]:
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", 64 * MIB),
        # Keep idle client connections alive through NATs, but refuse ping floods.
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
        ("grpc.http2.max_pings_without_data", 0),
    ]


async def serve(spec: ServiceSpec, args: argparse.Namespace) -> int:
    log = logging.getLogger(spec.name)
    try:
        tls = ServerTls.from_args(args)
        credentials = tls.credentials() if tls else None
    except TlsConfigError as error:
        log.error("%s", error)
        return 2
    telemetry.setup_tracing(spec.name)
    admission = Admission()
    server = grpc.aio.server(options=server_options(int(args.max_message_mib * MIB)), interceptors=[admission])
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    load_model = spec.create(args, server, admission)
    reflection.enable_server_reflection(
        [*spec.grpc_service_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME],
        server,
    )
    for name in ("", *spec.grpc_service_names):
        await health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    bind = f"{args.host}:{args.port}"
    port = _bind(server, bind, credentials)
    if port == 0:
        log.error("could not bind %s:%s (port in use?)", args.host, args.port)
        return 2
    health_server = await _start_health_server(health, args, log) if args.health_port >= 0 else None
    if args.health_port >= 0 and health_server is None:
        return 2
    await server.start()
    security = (
        f"{tls.mode}, client certificate required" if tls and tls.client_ca else (tls.mode if tls else "plaintext")
    )
    log.info("listening on %s:%d (%s; health NOT_SERVING until the model is loaded)", args.host, port, security)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    loading = asyncio.create_task(_load(load_model, log))
    stopping = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait({loading, stopping}, return_when=asyncio.FIRST_COMPLETED)
    exit_code = 0
    if loading in done:
        info = loading.result()
        if info is None:
            exit_code = 1
            stop.set()
        else:
            for name in ("", *spec.grpc_service_names):
                await health.set(name, health_pb2.HealthCheckResponse.SERVING)
            details = " ".join(f"{k}={v}" for k, v in info.items())
            log.info("SERVING on %s:%d %s", args.host, port, details)
    await stop.wait()

    log.info("shutting down: health NOT_SERVING, new calls refused, %.1fs grace for in-flight calls", args.grace_s)
    await health.enter_graceful_shutdown()
    await server.stop(args.grace_s)
    if health_server is not None:
        await health_server.stop(None)
    telemetry.shutdown_tracing()
    log.info("stopped")
    if not loading.done():
        loading.cancel()
    return exit_code


def _bind(server: grpc.aio.Server, address: str, credentials: grpc.ServerCredentials | None) -> int:
    """The bound port, 0 when the address cannot be bound (grpc raises RuntimeError for that)."""
    try:
        if credentials is not None:
            return server.add_secure_port(address, credentials)
        return server.add_insecure_port(address)
    except RuntimeError:
        return 0


async def _start_health_server(
    health: HealthServicer, args: argparse.Namespace, log: logging.Logger
) -> grpc.aio.Server | None:
    """grpc.health.v1 alone, plaintext: carries no private data, answers probes that cannot do TLS."""
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    port = _bind(server, f"{args.host}:{args.health_port}", None)
    if port == 0:
        log.error("could not bind the health port %s:%s (port in use?)", args.host, args.health_port)
        return None
    await server.start()
    log.info("health (grpc.health.v1 only, plaintext) on %s:%d", args.host, port)
    return server


async def _load(load_model: ModelLoader, log: logging.Logger) -> Mapping[str, Any] | None:
    if os.environ.get(HOLD_LOAD_ENV, "").strip().lower() in TRUE_WORDS:
        log.info("%s is set (tests only): the model loads when a line arrives on stdin", HOLD_LOAD_ENV)
        await asyncio.to_thread(sys.stdin.readline)
    started = time.perf_counter()
    try:
        info = await asyncio.to_thread(load_model)
    except Exception as error:
        # Health stays NOT_SERVING and the process exits 1: the launcher reports this line.
        log.error("model failed to load or warm up: %s", error)
        return None
    return {**info, "load_s": f"{time.perf_counter() - started:.2f}"}


def run_service_cli(spec: ServiceSpec, argv: Sequence[str] | None = None) -> None:
    args = parse_arguments(spec, argv)
    # A crash inside a native library (llama.cpp, ONNX, CTranslate2) then leaves the Python
    # stack in the log, which the launcher shows when the service dies before SERVING.
    faulthandler.enable(all_threads=False)
    logging.basicConfig(
        level=str(args.log_level).upper(),
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    sys.exit(asyncio.run(serve(spec, args)))
