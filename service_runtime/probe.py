"""`python -m service_runtime.probe HOST:PORT`: exit 0 when grpc.health.v1 answers SERVING.

For container health checks (the Dockerfile's HEALTHCHECK, compose). TLS with the VOICE_TLS_*
variables when set; or point it at the plaintext `--health-port`.
"""

from __future__ import annotations

import argparse
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service_runtime.config import float_in
from service_runtime.tls import ClientTls


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service_runtime.probe")
    parser.add_argument("address", help="HOST:PORT of the service (or of its --health-port)")
    parser.add_argument("--timeout-s", type=float_in(0, low_open=True), default=3.0)
    parser.add_argument("--plaintext", action="store_true", help="ignore VOICE_TLS_* (a --health-port)")
    args = parser.parse_args(argv)
    tls = None if args.plaintext else ClientTls.from_env()
    channel = (
        grpc.secure_channel(args.address, tls.credentials(), tls.options())
        if tls
        else grpc.insecure_channel(args.address)
    )
    with channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=args.timeout_s)
        except grpc.RpcError as error:
            print(f"{args.address}: {error.code().name}", file=sys.stderr)
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(f"{args.address}: {status}")
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    sys.exit(main())
