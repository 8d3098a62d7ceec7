"""Client-side load balancing through grpc's own policies, on real in-process gRPC servers
(FAKE servicers that only record who served a call): a target naming several replicas spreads
STT/TTS calls round robin, keeps an LLM conversation on one replica (ring hash on the session
id, added as a header by the channel), skips a replica that reports NOT_SERVING or is gone, and
moves a conversation to another replica when its own leaves."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from orchestrator.clients import BALANCING, channel, check_service
from service_runtime.channels import SESSION_HEADER
from voice.llm.v1 import llm_pb2, llm_pb2_grpc

NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVING = health_pb2.HealthCheckResponse.SERVING


class Replica(llm_pb2_grpc.LanguageModelServicer):
    """A FAKE llm replica: ResetSession records the session header it saw and answers its index."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.headers: list[str] = []
        self.server = grpc.aio.server()
        self.health = HealthServicer()
        self.port = 0

    async def start(self) -> Replica:
        llm_pb2_grpc.add_LanguageModelServicer_to_server(self, self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()
        await self.health.set("", SERVING)
        return self

    async def Generate(self, request: llm_pb2.GenerateRequest, context: grpc.aio.ServicerContext) -> Any:
        self.headers.append(dict(context.invocation_metadata() or ()).get(SESSION_HEADER, ""))
        yield llm_pb2.GenerateResponse(final=llm_pb2.GenerationSummary(completion_tokens=self.index))

    async def ResetSession(
        self, request: llm_pb2.ResetSessionRequest, context: grpc.aio.ServicerContext
    ) -> llm_pb2.ResetSessionResponse:
        self.headers.append(dict(context.invocation_metadata() or ()).get(SESSION_HEADER, ""))
        return llm_pb2.ResetSessionResponse(dropped_messages=self.index)


def with_replicas(body: Callable[[list[Replica]], Awaitable[None]], count: int = 3) -> None:
    async def run() -> None:
        started = [await Replica(i).start() for i in range(count)]
        try:
            await asyncio.wait_for(body(started), 60)
        finally:
            for replica in started:
                await replica.server.stop(None)

    asyncio.run(run())


def _target(replicas: list[Replica]) -> str:
    return "ipv4:" + ",".join(f"127.0.0.1:{r.port}" for r in replicas)


async def _served_by(stub: llm_pb2_grpc.LanguageModelStub, session: str) -> int:
    reply = await stub.ResetSession(llm_pb2.ResetSessionRequest(session_id=session), timeout=10, wait_for_ready=True)
    return int(reply.dropped_messages)


def test_round_robin_spreads_calls_over_every_replica_and_skips_one_not_serving() -> None:
    async def body(replicas: list[Replica]) -> None:
        async with channel(_target(replicas), balancing=BALANCING["tts"]) as ch:
            stub = llm_pb2_grpc.LanguageModelStub(ch)
            await _served_by(stub, "")
            await asyncio.wait_for(_all_ready(stub, 3), 10)
            assert Counter([await _served_by(stub, "") for _ in range(9)]) == {0: 3, 1: 3, 2: 3}
            await replicas[1].health.set("", NOT_SERVING)  # e.g. draining on SIGTERM
            await asyncio.wait_for(_until_skipped(stub, 1), 10)
            assert 1 not in {await _served_by(stub, "") for _ in range(12)}

    with_replicas(body)


async def _all_ready(stub: llm_pb2_grpc.LanguageModelStub, count: int) -> None:
    # Subchannels connect one by one: call until every replica has answered (bounded by wait_for).
    seen: set[int] = set()
    while len(seen) < count:
        seen.add(await _served_by(stub, ""))


async def _until_skipped(stub: llm_pb2_grpc.LanguageModelStub, index: int) -> None:
    # The replica's health Watch stream tells the channel; call until the picker has moved on
    # (bounded by wait_for), i.e. until a full round skipped it.
    while index in {await _served_by(stub, "") for _ in range(6)}:
        pass


def test_affinity_keeps_each_conversation_on_one_replica_and_moves_it_when_that_replica_leaves() -> None:
    async def body(replicas: list[Replica]) -> None:
        async with channel(_target(replicas), balancing=BALANCING["llm"]) as ch:
            stub = llm_pb2_grpc.LanguageModelStub(ch)
            sessions = [f"conv-{i}" for i in range(24)]
            home = {s: await _served_by(stub, s) for s in sessions}
            for _ in range(3):  # later turns of each conversation: same replica
                assert {s: await _served_by(stub, s) for s in sessions} == home
            assert len(set(home.values())) > 1, "24 conversations all hashed to one replica"
            # The channel put the session id in the header the ring hash reads.
            assert {h for r in replicas for h in r.headers} == set(sessions)
            gone = home[sessions[0]]
            await replicas[gone].server.stop(None)
            moved = {s: await _served_by(stub, s) for s in sessions}
            assert gone not in moved.values()
            # Conversations on the surviving replicas stay where their caches are.
            assert all(moved[s] == home[s] for s in sessions if home[s] != gone)

    with_replicas(body)


def test_streaming_calls_carry_the_session_header_and_follow_the_same_replica_as_unary_ones() -> None:
    # grpc.aio files an interceptor under its first call type only: Generate (server-streaming)
    # once went out without the header, i.e. to a random replica each turn.
    async def body(replicas: list[Replica]) -> None:
        async with channel(_target(replicas), balancing=BALANCING["llm"]) as ch:
            stub = llm_pb2_grpc.LanguageModelStub(ch)
            for i in range(12):
                sid = f"conv-{i}"
                home = await _served_by(stub, sid)
                for _ in range(2):
                    replies = [r async for r in stub.Generate(llm_pb2.GenerateRequest(session_id=sid), timeout=10)]
                    assert replies[-1].final.completion_tokens == home
            generate_headers = [h for r in replicas for h in r.headers]
            assert "" not in generate_headers and len(generate_headers) == 36

    with_replicas(body)


def test_a_replica_list_is_up_when_one_replica_serves() -> None:
    async def body(replicas: list[Replica]) -> None:
        await replicas[0].health.set("", NOT_SERVING)
        await replicas[1].server.stop(None)
        await check_service("llm", _target(replicas), timeout_s=10)

    with_replicas(body)


def test_a_list_target_checks_certificates_against_its_first_host_and_flags_turn_tls_on() -> None:
    import argparse

    from orchestrator.config import ServiceAddresses
    from service_runtime.channels import list_host
    from service_runtime.tls import TlsConfigError

    assert list_host("ipv4:127.0.0.1:50052,127.0.0.1:50062") == "127.0.0.1"
    assert list_host("ipv6:[::1]:50052,[::1]:50062") == "::1"
    assert list_host("dns:///llm.voice.svc.cluster.local:50052") == list_host("127.0.0.1:50052") == ""
    parser = argparse.ArgumentParser()
    ServiceAddresses.add_arguments(parser)
    args = parser.parse_args(["--llm-address", "ipv4:127.0.0.1:1,127.0.0.1:2", "--service-tls-ca", "ca.pem"])
    addresses = ServiceAddresses.from_args(args)
    assert addresses.llm == "ipv4:127.0.0.1:1,127.0.0.1:2"
    assert addresses.tls is not None and addresses.tls.ca == "ca.pem" and addresses.tls.mode == "tls"
    half = parser.parse_args(["--service-tls-cert", "client.pem"])
    with pytest.raises(TlsConfigError, match="needs both --service-tls-cert and --service-tls-key"):
        ServiceAddresses.from_args(half)
