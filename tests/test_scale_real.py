"""Scale-out on loopback: two replicas of each real service (bundled models, mutual TLS with
certificates made at test time), reached through multi-backend gRPC targets with grpc's own
balancing and client-side health checking.

- 8 concurrent conversations of 2 turns: every turn served, turns spread over both replicas of
  each service (GetStats counters), no cross-talk, every second turn a KV cache hit.
- Affinity: a conversation's turns stay on the replica holding its KV cache.
- A replica that drains (SIGTERM: health NOT_SERVING) gets no new turns; its in-flight one finishes.
- A replica listed in the target but down from the start: turns succeed on the others.
- An STT or TTS replica SIGKILLed mid-stream fails that turn naming the service; the same
  conversation's next turn goes to the live replica, with nothing restarted.
- "My name is Anna." / "What is my name?" with the LLM replica that served turn 1 SIGKILLed
  between the turns: the other replica answers turn 2 and still knows "Anna".
- All of the above through TLS targets; a plaintext client is refused and the server logs it.
"""

from __future__ import annotations

import asyncio
import signal
import socket
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest

from orchestrator import Conversation, TurnResult
from orchestrator.config import ServiceAddresses
from orchestrator.events import ConversationEvent, EventKind
from service_runtime.channels import Balancing, sync_channel
from service_runtime.launcher import ServiceProcess
from service_runtime.tls import ClientTls
from tests.certs import Pki, make_pki
from tests.helpers import FIXTURES, GREEDY, pcm, user
from tests.wer import wer
from voice.llm.v1 import llm_pb2, llm_pb2_grpc
from voice.stt.v1 import stt_pb2, stt_pb2_grpc
from voice.tts.v1 import tts_pb2, tts_pb2_grpc

pytestmark = pytest.mark.real

KINDS = ("stt", "llm", "tts")
REPLICAS = 2
CONVERSATIONS = 8
# Qwen2.5-0.5B (the default model): the name-memory turn needs a model that recalls a name.
ARGS = {
    "stt": ["--max-sessions", "16"],
    "llm": ["--n-ctx", "2048", "--max-queue", "16", "--grace-s", "60"],
    "tts": ["--max-streams", "16"],
}
TURN_BOUND_S = 240.0
# Where a test checks where turns went (counters) and that each got a reply, not what the reply says.
SHORT_REPLY = 8
CLIPS = [
    "weather_paris.wav", "timer.wav", "leap_year.wav", "tokyo_time.wav", "recipe.wav", "living_room_lights.wav",
    "fast_weather.wav", "fast_alarm.wav", "fast_math.wav", "long_rainbow.wav", "long_story.wav", "long_plan.wav",
    "paused_moon.wav", "paused_capital.wav", "paused_song.wav", "memory_question.wav",
]  # fmt: skip


@dataclass
class Replicas:
    pki: Pki
    tls: ClientTls
    procs: dict[str, list[ServiceProcess]] = field(default_factory=dict)
    server_args: list[str] = field(default_factory=list)

    def start(self, kind: str, index: int, port: int = 0) -> ServiceProcess:
        proc = ServiceProcess(kind, args=[*ARGS[kind], *self.server_args], port=port)
        self.procs.setdefault(kind, [None] * REPLICAS)[index] = proc  # type: ignore[list-item]
        return proc

    def target(self, kind: str, extra: tuple[str, ...] = ()) -> str:
        return "ipv4:" + ",".join([*(p.address for p in self.procs[kind]), *extra])

    def addresses(self, **override: str) -> ServiceAddresses:
        targets = {kind: override.get(kind) or self.target(kind) for kind in KINDS}
        return ServiceAddresses(**targets, tls=self.tls)

    def channel(self, address: str) -> grpc.Channel:
        """A channel to one replica (no balancing), with the deployment's client certificate."""
        return grpc.secure_channel(address, self.tls.credentials())

    def served(self, kind: str) -> list[int]:
        """Per replica: calls served since start-up (STT sessions, LLM generations, TTS streams)."""
        counts = []
        for proc in self.procs[kind]:
            with self.channel(proc.address) as channel:
                if kind == "stt":
                    counts.append(stt_stats(channel).total_sessions)
                elif kind == "llm":
                    counts.append(llm_stats(channel).generations_total)
                else:
                    counts.append(
                        tts_pb2_grpc.TextToSpeechStub(channel)
                        .GetStats(tts_pb2.GetStatsRequest(), timeout=10)
                        .total_streams
                    )
        return counts

    def llm_stats(self) -> list[llm_pb2.GetStatsResponse]:
        out = []
        for proc in self.procs["llm"]:
            with self.channel(proc.address) as channel:
                out.append(llm_stats(channel))
        return out


def stt_stats(channel: grpc.Channel) -> stt_pb2.GetStatsResponse:
    return stt_pb2_grpc.SpeechToTextStub(channel).GetStats(stt_pb2.GetStatsRequest(), timeout=10)


def llm_stats(channel: grpc.Channel) -> llm_pb2.GetStatsResponse:
    return llm_pb2_grpc.LanguageModelStub(channel).GetStats(llm_pb2.GetStatsRequest(), timeout=10)


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    pki = make_pki(tmp_path_factory.mktemp("pki"))
    tls = ClientTls(ca=str(pki.ca), cert=str(pki.client.cert), key=str(pki.client.key))
    r = Replicas(pki, tls)
    r.server_args = [
        "--tls-cert", str(pki.server.cert), "--tls-key", str(pki.server.key), "--tls-client-ca", str(pki.ca),
    ]  # fmt: skip
    for kind in KINDS:
        for index in range(REPLICAS):
            r.start(kind, index)
    every = [p for kind in KINDS for p in r.procs[kind]]
    try:
        with ThreadPoolExecutor(len(every)) as pool:
            list(pool.map(lambda p: p.wait_serving(600, tls=tls), every))
        yield r
    finally:
        for proc in (p for kind in KINDS for p in r.procs[kind]):
            proc.terminate()


def conversation(addresses: ServiceAddresses, **kwargs: Any) -> Conversation:
    options: dict[str, Any] = {"max_tokens": 24, "sampling": GREEDY, "preemptive": False}
    return Conversation(addresses, **{**options, **kwargs})


def text_of(clip: str) -> str:
    return str(FIXTURES[clip]["text"])


def delta(after: list[int], before: list[int]) -> list[int]:
    return [a - b for a, b in zip(after, before, strict=True)]


@pytest.mark.timeout(900)
def test_concurrent_conversations_spread_over_both_replicas_of_each_service_without_cross_talk(
    replicas: Replicas,
) -> None:
    pairs = [(CLIPS[2 * i], CLIPS[2 * i + 1]) for i in range(CONVERSATIONS)]
    before = {kind: replicas.served(kind) for kind in KINDS}
    stats_before = replicas.llm_stats()
    hits_before = [s.kv_cache_hits_total for s in stats_before]
    misses_before = [s.kv_cache_misses_total for s in stats_before]

    async def one(i: int, clips: tuple[str, str]) -> list[TurnResult]:
        conv = conversation(replicas.addresses(), session_id=f"scale-spread-{i}", max_tokens=SHORT_REPLY)
        try:
            results = []
            for clip in clips:
                results += await conv.run_file(pcm(clip), 16000, pace=False)
            return results
        finally:
            await conv.close()

    async def scenario() -> list[list[TurnResult] | BaseException]:
        return await asyncio.wait_for(
            asyncio.gather(*(one(i, p) for i, p in enumerate(pairs)), return_exceptions=True), TURN_BOUND_S * 3
        )

    outcomes = asyncio.run(scenario())
    errors = [o for o in outcomes if isinstance(o, BaseException)]
    assert not errors, errors[:3]
    all_texts = [text_of(c) for c in CLIPS[: 2 * CONVERSATIONS]]
    for clips, outcome in zip(pairs, outcomes, strict=True):
        assert not isinstance(outcome, BaseException)
        assert len(outcome) == 2, f"{clips}: {[r.transcript for r in outcome]}"
        for clip, result in zip(clips, outcome, strict=True):
            expected = text_of(clip)
            assert wer(expected, result.transcript) < min(wer(t, result.transcript) for t in all_texts if t != expected)
            assert result.reply.strip() and result.audio_s > 0.2, result
    turns = 2 * CONVERSATIONS
    served = {kind: delta(replicas.served(kind), before[kind]) for kind in KINDS}
    print(f"\nturns per replica: {served}")
    assert sum(served["llm"]) == turns
    assert sum(served["tts"]) >= turns  # one stream per reply
    for kind in ("stt", "tts"):
        assert all(n > 0 for n in served[kind]), f"{kind}: {served[kind]} (round robin used one replica only)"
    # Affinity: every conversation's second turn found its first in the same replica's KV cache.
    stats = replicas.llm_stats()
    hits = delta([s.kv_cache_hits_total for s in stats], hits_before)
    misses = delta([s.kv_cache_misses_total for s in stats], misses_before)
    print(f"second turns: kv cache hits {hits}, misses {misses}")
    assert (sum(hits), sum(misses)) == (CONVERSATIONS, 0)


@pytest.mark.timeout(600)
def test_a_conversation_stays_on_the_replica_holding_its_cache(replicas: Replicas) -> None:
    before = replicas.llm_stats()

    async def scenario() -> list[TurnResult]:
        conv = conversation(replicas.addresses(), session_id="scale-affinity", max_tokens=SHORT_REPLY)
        try:
            results = []
            for clip in ("timer.wav", "leap_year.wav", "tokyo_time.wav"):
                results += await conv.run_file(pcm(clip), 16000, pace=False)
            return results
        finally:
            await conv.close()

    results = asyncio.run(asyncio.wait_for(scenario(), TURN_BOUND_S))
    assert len(results) == 3
    after = replicas.llm_stats()
    served = delta([s.generations_total for s in after], [s.generations_total for s in before])
    hits = delta([s.kv_cache_hits_total for s in after], [s.kv_cache_hits_total for s in before])
    # The conversation stays with its cache: one replica served all three turns, two were hits.
    assert sorted(served) == [0, 3] and sum(hits) == 2, (served, hits)
    assert results[-1].cached_prompt_tokens > results[0].prompt_tokens, "the third turn re-read the history"


@pytest.mark.timeout(600)
def test_a_draining_replica_gets_no_new_turns_and_finishes_its_in_flight_one(replicas: Replicas) -> None:
    draining, other = replicas.procs["llm"]
    other_before = llm_stats_one(replicas, other).generations_total
    greedy = llm_pb2.SamplingOptions(temperature=0.0)
    with (
        replicas.channel(draining.address) as direct,
        sync_channel(replicas.target("llm"), replicas.tls, Balancing.AFFINITY) as balanced,
    ):
        in_flight = llm_pb2_grpc.LanguageModelStub(direct).Generate(
            llm_pb2.GenerateRequest(
                messages=[user("Tell me a story about a lighthouse.")], max_tokens=48, sampling=greedy
            ),
            timeout=TURN_BOUND_S,
        )
        first = next(in_flight)  # generating on the replica about to drain
        draining.process.send_signal(signal.SIGTERM)
        draining.wait_for_log(lambda log: "shutting down: health NOT_SERVING" in log, timeout_s=30)
        stub = llm_pb2_grpc.LanguageModelStub(balanced)
        sessions = [f"scale-drain-{i}" for i in range(6)]
        for sid in sessions:  # new turns, including conversations the ring hash had put on it
            reply = list(
                stub.Generate(
                    llm_pb2.GenerateRequest(session_id=sid, messages=[user("Say hi.")], max_tokens=4, sampling=greedy),
                    timeout=TURN_BOUND_S,
                    metadata=[("x-session-id", sid)],
                )
            )
            assert reply[-1].HasField("final")
        rest = list(in_flight)
    assert rest[-1].HasField("final") and rest[-1].final.completion_tokens > 1, "the in-flight turn finished"
    assert (first.text + "".join(m.text for m in rest)).strip()
    assert draining.process.wait(60) == 0
    assert llm_stats_one(replicas, other).generations_total - other_before == len(sessions)
    replicas.start("llm", 0, port=draining.port).wait_serving(600, tls=replicas.tls)  # back for the next tests


def llm_stats_one(replicas: Replicas, proc: ServiceProcess) -> llm_pb2.GetStatsResponse:
    with replicas.channel(proc.address) as channel:
        return llm_stats(channel)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.timeout(600)
def test_with_a_listed_replica_down_from_the_start_turns_succeed_on_the_others(replicas: Replicas) -> None:
    down = f"127.0.0.1:{closed_port()}"  # nothing listens there
    addresses = replicas.addresses(**{kind: replicas.target(kind, (down,)) for kind in KINDS})
    before = {kind: sum(replicas.served(kind)) for kind in KINDS}

    async def scenario() -> list[TurnResult]:
        conv = conversation(addresses, session_id="scale-one-down", max_tokens=SHORT_REPLY)
        try:
            results = []
            for clip in ("timer.wav", "leap_year.wav"):
                results += await conv.run_file(pcm(clip), 16000, pace=False)
            return results
        finally:
            await conv.close()

    results = asyncio.run(asyncio.wait_for(scenario(), TURN_BOUND_S))
    assert [r.reply.strip() != "" for r in results] == [True, True], results
    assert sum(replicas.served("llm")) - before["llm"] == 2


def busy_replica(replicas: Replicas, kind: str) -> int | None:
    """The replica of `kind` with a stream open right now (the conversation's); None while no
    replica counts it yet (the stream's first message may still be on its way)."""
    active = []
    for proc in replicas.procs[kind]:
        with replicas.channel(proc.address) as channel:
            if kind == "stt":
                active.append(stt_stats(channel).active_sessions)
            else:
                active.append(
                    tts_pb2_grpc.TextToSpeechStub(channel)
                    .GetStats(tts_pb2.GetStatsRequest(), timeout=10)
                    .active_streams
                )
    assert sum(active) <= 1, f"one conversation, {active} streams open"
    return active.index(1) if sum(active) == 1 else None


@pytest.mark.timeout(600)
@pytest.mark.parametrize("kind", ["stt", "tts"])
def test_a_replica_killed_mid_stream_fails_that_turn_naming_it_and_the_next_turn_goes_to_a_live_one(
    replicas: Replicas, kind: str
) -> None:
    trigger = EventKind.SPEECH_STARTED if kind == "stt" else EventKind.REPLY_DELTA
    killed: list[int] = []

    def listener(event: ConversationEvent) -> None:
        # On the first trigger event at which the replica serving the turn has its stream open
        # (checked again at each REPLY_DELTA: a busy TTS may not have counted it at the first).
        if event.kind is trigger and not killed:
            index = busy_replica(replicas, kind)
            if index is not None:
                replicas.procs[kind][index].process.send_signal(signal.SIGKILL)
                killed.append(index)

    async def scenario() -> list[TurnResult]:
        conv = conversation(replicas.addresses(), session_id=f"scale-kill-{kind}", max_tokens=64, listener=listener)
        try:
            with pytest.raises(Exception) as failed:
                await conv.run_file(pcm("weather_paris.wav"), 16000, pace=False)
            assert killed, f"no {kind} replica had the turn's stream open at a {trigger}"
            assert f"{kind}-service" in str(failed.value), str(failed.value)
            # No restart: the same conversation's next turn goes to the live replica.
            return await conv.run_file(pcm("timer.wav"), 16000, pace=False)
        finally:
            await conv.close()

    try:
        results = asyncio.run(asyncio.wait_for(scenario(), TURN_BOUND_S))
        assert len(results) == 1 and results[0].reply.strip() and results[0].audio_s > 0.3, results
        assert wer(text_of("timer.wav"), results[0].transcript) < 0.4, results[0].transcript
    finally:
        for index in killed:
            dead = replicas.procs[kind][index]
            dead.process.wait(30)
            replicas.start(kind, index, port=dead.port).wait_serving(600, tls=replicas.tls)


@pytest.mark.timeout(900)
def test_the_conversation_survives_the_llm_replica_that_served_it_being_killed(replicas: Replicas) -> None:
    async def scenario() -> tuple[TurnResult, TurnResult, int, llm_pb2.GetStatsResponse]:
        conv = conversation(replicas.addresses(), session_id="scale-anna", max_tokens=32)
        try:
            before = replicas.served("llm")
            (first,) = await conv.run_file(pcm("memory_name.wav"), 16000, pace=False)
            served = delta(replicas.served("llm"), before)
            assert sorted(served) == [0, 1], served
            home = served.index(1)
            replicas.procs["llm"][home].kill()  # SIGKILL: its sessions and KV cache are gone
            survivor_before = llm_stats_one(replicas, replicas.procs["llm"][1 - home])
            (second,) = await conv.run_file(pcm("memory_question.wav"), 16000, pace=False)
            return first, second, home, survivor_before
        finally:
            await conv.close()

    first, second, home, survivor_before = asyncio.run(asyncio.wait_for(scenario(), TURN_BOUND_S))
    assert "anna" in first.transcript.lower(), first.transcript
    assert "name" in second.transcript.lower(), second.transcript
    assert "anna" in second.reply.lower(), second.reply
    survivor = replicas.procs["llm"][1 - home]
    after = llm_stats_one(replicas, survivor)
    assert after.generations_total - survivor_before.generations_total == 1
    # It had never seen the conversation: it read the history the orchestrator sent.
    assert after.kv_cache_misses_total - survivor_before.kv_cache_misses_total == 1
    killed = replicas.procs["llm"][home]
    replicas.start("llm", home, port=killed.port).wait_serving(600, tls=replicas.tls)


def test_a_plaintext_client_is_refused_by_every_replica_and_the_refusal_is_logged(replicas: Replicas) -> None:
    for kind in KINDS:
        for proc in replicas.procs[kind]:
            before = proc.log.count("Handshake failed")
            with grpc.insecure_channel(proc.address) as channel, pytest.raises(grpc.RpcError) as refused:
                stt_stats(channel) if kind == "stt" else llm_stats(channel)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            proc.wait_for_log(more_handshake_failures(before), timeout_s=10)


def more_handshake_failures(before: int) -> Callable[[str], bool]:
    return lambda log: log.count("Handshake failed") > before
