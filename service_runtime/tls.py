"""TLS and mutual TLS with grpc's own credentials, for the servers and for their clients.

Server (every service): `--tls-cert`/`--tls-key` turn TLS on; `--tls-client-ca` also requires a
client certificate signed by that CA (mutual TLS): a plaintext client, a client without a
certificate or one whose certificate another CA signed fails the handshake (the client sees
UNAVAILABLE; grpc logs "Handshake failed" on the server's stderr).

Client (orchestrator, launcher health waits, tests): VOICE_TLS_CA (CA that signed the servers'
certificates), VOICE_TLS_CERT / VOICE_TLS_KEY (this client's certificate for mutual TLS) and
VOICE_TLS_SERVER_NAME (name to check in the server certificate when it differs from the target's
host, e.g. a shared certificate for all replicas).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from service_runtime.config import EnvFlags


class TlsConfigError(ValueError):
    """A TLS flag points at a missing file or a needed companion flag is missing."""


def _read(path: str, flag: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise TlsConfigError(f"{flag} {path}: {error.strerror or error}") from None


@dataclass(frozen=True)
class ServerTls:
    cert: str
    key: str
    client_ca: str = ""  # set = mutual TLS

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ServerTls | None:
        cert, key, client_ca = (args.tls_cert or "", args.tls_key or "", args.tls_client_ca or "")
        if not (cert or key or client_ca):
            return None
        if not (cert and key):
            raise TlsConfigError("TLS needs both --tls-cert and --tls-key (--tls-client-ca adds client checks)")
        return cls(cert, key, client_ca)

    def credentials(self) -> grpc.ServerCredentials:
        chain = _read(self.cert, "--tls-cert")
        key = _read(self.key, "--tls-key")
        ca = _read(self.client_ca, "--tls-client-ca") if self.client_ca else None
        return grpc.ssl_server_credentials([(key, chain)], root_certificates=ca, require_client_auth=ca is not None)

    @property
    def mode(self) -> str:
        return "mtls" if self.client_ca else "tls"


def add_server_arguments(flags: EnvFlags) -> None:
    flags.add("--tls-cert", "", "PEM certificate chain; with --tls-key turns TLS on")
    flags.add("--tls-key", "", "PEM private key of --tls-cert")
    flags.add("--tls-client-ca", "", "PEM CA bundle; clients must present a certificate it signed (mutual TLS)")


@dataclass(frozen=True)
class ClientTls:
    ca: str = ""  # empty = the system's trust store
    cert: str = ""
    key: str = ""
    server_name: str = ""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ClientTls | None:
        env = os.environ if environ is None else environ
        tls = cls(
            env.get("VOICE_TLS_CA", ""),
            env.get("VOICE_TLS_CERT", ""),
            env.get("VOICE_TLS_KEY", ""),
            env.get("VOICE_TLS_SERVER_NAME", ""),
        )
        return tls.checked() if (tls.ca or tls.cert or tls.key) else None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ClientTls | None:
        tls = cls(
            args.service_tls_ca or "",
            args.service_tls_cert or "",
            args.service_tls_key or "",
            args.service_tls_server_name or "",
        )
        return tls.checked() if (tls.ca or tls.cert or tls.key) else None

    def checked(self) -> ClientTls:
        if bool(self.cert) != bool(self.key):
            raise TlsConfigError(
                "a client certificate needs both --service-tls-cert and --service-tls-key (VOICE_TLS_CERT/KEY)"
            )
        return self

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca, "--service-tls-ca") if self.ca else None,
            private_key=_read(self.key, "--service-tls-key") if self.key else None,
            certificate_chain=_read(self.cert, "--service-tls-cert") if self.cert else None,
        )

    def options(self) -> list[tuple[str, Any]]:
        return [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []

    @property
    def mode(self) -> str:
        return "mtls" if self.cert else "tls"


def add_client_arguments(parser: argparse.ArgumentParser) -> None:
    """--service-tls-* flags: how a client reaches TLS services (env VOICE_TLS_*)."""
    env = os.environ
    parser.add_argument(
        "--service-tls-ca",
        default=env.get("VOICE_TLS_CA", ""),
        help="CA that signed the services' certificates; turns TLS on (env VOICE_TLS_CA)",
    )
    parser.add_argument(
        "--service-tls-cert",
        default=env.get("VOICE_TLS_CERT", ""),
        help="client certificate for services that require mutual TLS (env VOICE_TLS_CERT)",
    )
    parser.add_argument(
        "--service-tls-key", default=env.get("VOICE_TLS_KEY", ""), help="its private key (env VOICE_TLS_KEY)"
    )
    parser.add_argument(
        "--service-tls-server-name",
        default=env.get("VOICE_TLS_SERVER_NAME", ""),
        help="name expected in the services' certificates when it is not the target host (env VOICE_TLS_SERVER_NAME)",
    )
