"""Client channels to the services, where one target may name several replicas.

A target is anything grpc resolves: `127.0.0.1:50052`, a static list
`ipv4:127.0.0.1:50052,127.0.0.1:50062`, or `dns:///llm.voice.svc.cluster.local:50052` (a
headless Service: one A record per ready pod). Selection is grpc's own, set by service config:

* `round_robin` (STT, TTS): each call goes to the next replica that is READY.
* `affinity` (LLM): grpc's `ring_hash` policy hashing the `x-session-id` request header, so the
  turns of one conversation go to the replica holding its KV cache; when that replica leaves,
  the conversation moves to the next one on the ring (and its history, sent by the client,
  is re-read there once).

Both use client-side health checking (grpc.health.v1 Watch on every replica): a replica that
reports NOT_SERVING (draining on SIGTERM, still loading its model) or dies leaves the rotation
and calls go to the others; it rejoins when it reports SERVING again.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from enum import Enum
from typing import Any

import grpc

from service_runtime.tls import ClientTls

# Request header carrying the conversation id: the affinity policy hashes it.
SESSION_HEADER = "x-session-id"
# ring_hash reads `requestHashHeader` only with this switch (gRFC A76, still behind an
# environment variable in grpcio 1.85); without it a pick with no xDS hash never completes.
# grpc reads it when its core starts, i.e. at the first channel or server of the process.
os.environ.setdefault("GRPC_EXPERIMENTAL_RING_HASH_SET_REQUEST_HASH_KEY", "true")


class Balancing(str, Enum):
    ROUND_ROBIN = "round_robin"
    AFFINITY = "affinity"


def service_config(balancing: Balancing = Balancing.ROUND_ROBIN, health_service: str = "") -> str:
    if balancing == Balancing.AFFINITY:
        # minRingSize: enough ring entries that two or three replicas get near-equal shares.
        policy: dict[str, Any] = {"ring_hash_experimental": {"requestHashHeader": SESSION_HEADER, "minRingSize": 1024}}
    else:
        policy = {"round_robin": {}}
    return json.dumps({"loadBalancingConfig": [policy], "healthCheckConfig": {"serviceName": health_service}})


def list_host(target: str) -> str:
    """The host of the first address of an `ipv4:`/`ipv6:` list target ("" for other targets)."""
    scheme, _, rest = target.partition(":")
    if scheme not in ("ipv4", "ipv6") or not rest:
        return ""
    first = rest.split(",", 1)[0]
    if first.startswith("["):  # [::1]:50051
        return first[1 : first.index("]")]
    return first.rsplit(":", 1)[0]


def single_local_address(target: str) -> bool:
    """`127.0.0.1:50051`, `localhost:50051`, `[::1]:50051`: one backend, nothing to balance."""
    if target.startswith(("ipv4:", "ipv6:", "dns:", "unix:", "xds:")):
        return False
    host = target.rsplit(":", 1)[0].strip("[]")
    return host == "localhost" or host.replace(".", "").isdigit() or ":" in host


def channel_options(
    balancing: Balancing = Balancing.ROUND_ROBIN,
    tls: ClientTls | None = None,
    options: Sequence[tuple[str, Any]] = (),
    health_checked: bool = True,
    target: str = "",
) -> list[tuple[str, Any]]:
    config = json.loads(service_config(balancing))
    if not health_checked:  # e.g. a channel that itself asks a replica for its health status
        del config["healthCheckConfig"]
    if single_local_address(target):
        # grpc's default pick_first: a call after the one server restarted reconnects at once,
        # where round_robin would fail it fast while the subchannel sits in reconnect backoff.
        config = {}
    tls_options = tls.options() if tls else []
    if tls and not tls.server_name and list_host(target):
        # A list target has no single host name; the replicas' certificates are checked
        # against the first address's host (all replicas of a service share one certificate).
        tls_options = [("grpc.ssl_target_name_override", list_host(target))]
    return [
        ("grpc.service_config", json.dumps(config)),
        # Fresh DNS answers soon after a pod comes or goes (default minimum is 30 s).
        ("grpc.dns_min_time_between_resolutions_ms", 2_000),
        # A replica that comes back (restart, rollout) rejoins within ~1 s, not grpc's default 120 s cap.
        ("grpc.initial_reconnect_backoff_ms", 250),
        ("grpc.min_reconnect_backoff_ms", 250),
        ("grpc.max_reconnect_backoff_ms", 1_000),
        *tls_options,
        *options,
    ]


def aio_channel(
    target: str,
    tls: ClientTls | None = None,
    balancing: Balancing = Balancing.ROUND_ROBIN,
    options: Sequence[tuple[str, Any]] = (),
    health_checked: bool = True,
) -> grpc.aio.Channel:
    """An asyncio channel to `target` (one or many replicas), TLS when `tls` is given.

    Under `Balancing.AFFINITY` every call whose request has a `session_id` carries it in the
    `x-session-id` header (an interceptor), so callers need not add it themselves.
    """
    opts = channel_options(balancing, tls, options, health_checked, target)
    interceptors: list[Any] | None = None
    if balancing == Balancing.AFFINITY:
        interceptors = [UnarySessionHeader(), StreamingSessionHeader()]
    if tls is None:
        return grpc.aio.insecure_channel(target, options=opts, interceptors=interceptors)
    return grpc.aio.secure_channel(target, tls.credentials(), options=opts, interceptors=interceptors)


def sync_channel(
    target: str,
    tls: ClientTls | None = None,
    balancing: Balancing = Balancing.ROUND_ROBIN,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.Channel:
    opts = channel_options(balancing, tls, options, target=target)
    if tls is None:
        return grpc.insecure_channel(target, options=opts)
    return grpc.secure_channel(target, tls.credentials(), options=opts)


def _with_session_header(details: grpc.aio.ClientCallDetails, request: Any) -> grpc.aio.ClientCallDetails:
    session_id = getattr(request, "session_id", "")
    if not session_id:
        return details
    metadata = grpc.aio.Metadata(*(details.metadata or ()))
    metadata[SESSION_HEADER] = session_id
    return grpc.aio.ClientCallDetails(
        details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
    )


# grpc.aio files an interceptor under the FIRST call type it implements only, so unary and
# server-streaming calls (Generate) each need their own class.
class UnarySessionHeader(grpc.aio.UnaryUnaryClientInterceptor):
    """Copies a request's `session_id` field into the `x-session-id` header the affinity policy hashes."""

    async def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await continuation(_with_session_header(client_call_details, request), request)


class StreamingSessionHeader(grpc.aio.UnaryStreamClientInterceptor):
    """The same for server-streaming calls (Generate)."""

    async def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await continuation(_with_session_header(client_call_details, request), request)


def session_metadata(session_id: str) -> list[tuple[str, str]]:
    """Call metadata that routes a conversation's calls to one replica under `Balancing.AFFINITY`."""
    return [(SESSION_HEADER, session_id)] if session_id else []
