"""Each turn is one trace: root span `turn`, child `playback`, trace context on every RPC including
the turn's own StreamingRecognize stream; speculative attempts belong to their turn's trace (fakes). Each test has its own tracer provider
and in-memory exporter (the `span_exporter` fixture)."""

from __future__ import annotations

import asyncio

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from orchestrator import Conversation, TurnResult
from orchestrator.config import ServiceAddresses
from service_runtime import telemetry
from tests.fakes import (
    FakeLanguageModel,
    FakeSpeechToText,
    FakeTextToSpeech,
    RecordingSink,
    serve_fakes,
    utterance,
)
from tests.scenarios import FINAL, retracted_candidate


def test_each_turn_is_one_trace_with_latency_attributes_and_propagated_context(
    span_exporter: InMemorySpanExporter,
) -> None:
    exporter = span_exporter
    steps = [*utterance("first question", 100, 400, 500), *utterance("second one", 700, 900, 1000, index=1)]

    stt = FakeSpeechToText(steps)

    async def scenario() -> tuple[list[TurnResult], FakeLanguageModel, FakeTextToSpeech]:
        llm, tts = FakeLanguageModel("Fine. Thanks."), FakeTextToSpeech()
        fakes = await serve_fakes(stt, llm, tts)
        addresses = ServiceAddresses(stt=fakes.address, llm=fakes.address, tts=fakes.address)
        async with Conversation(addresses, sink=RecordingSink(), barge_in=False) as conversation:
            results = await conversation.run_file(bytes(32000), 16000, pace=False)
        await fakes.server.stop(None)
        return results, llm, tts

    results, llm, tts = asyncio.run(asyncio.wait_for(scenario(), 30))
    spans = exporter.get_finished_spans()
    turns = [s for s in spans if s.name == "turn"]
    assert len(results) == 2 and len(turns) == 2
    assert all(s.parent is None for s in turns), "a turn is the root of its trace"
    assert {format(s.context.trace_id, "032x") for s in turns} == {r.trace_id for r in results}
    for span, result in zip(sorted(turns, key=lambda s: s.start_time or 0), results, strict=True):
        attrs = dict(span.attributes or {})
        for key in ("dead_air_ms", "total_ms", "mode", "session_id", "transcript_chars", "reply_chars"):
            assert key in attrs, key
        assert attrs["barge_in"] is False and attrs["preemptive_used"] is False
        assert attrs["transcript_chars"] == len(result.transcript)
        events = [e.name for e in span.events]
        for name in ("speech_end", "stt_final", "first_token", "first_audio"):
            assert name in events, (name, events)
        (playback,) = [s for s in spans if s.name == "playback" and s.context.trace_id == span.context.trace_id]
        assert playback.parent is not None and playback.parent.span_id == span.context.span_id
        assert "audio_s" in dict(playback.attributes or {})
        assert "first_audio" in [e.name for e in playback.events]
    # Every LLM and TTS call of a turn carries that turn's trace id.
    trace_ids = {r.trace_id for r in results}
    assert {tp.split("-")[1] for tp in llm.traceparents} == trace_ids
    assert {s.traceparent.split("-")[1] for s in tts.syntheses} == trace_ids
    # One StreamingRecognize per turn, opened under that turn's root span.
    assert {tp.split("-")[1] for tp in stt.traceparents} >= trace_ids
    assert stt.streams_opened >= 2
    # Listening that heard nothing is never a `turn` trace.
    assert all(dict(s.attributes or {}).get("empty") for s in spans if s.name == "listen")


def test_a_discarded_speculative_attempt_stays_in_its_turns_trace(span_exporter: InMemorySpanExporter) -> None:
    exporter = span_exporter
    run = asyncio.run(asyncio.wait_for(retracted_candidate(), 30))
    (result,), llm, stt = run.results, run.fakes.llm, run.fakes.stt
    spans = [s for s in exporter.get_finished_spans() if format(s.context.trace_id, "032x") == result.trace_id]
    (root,) = [s for s in spans if s.name == "turn"]
    (speculative,) = [s for s in spans if s.name == "speculative"]
    assert speculative.parent is not None and speculative.parent.span_id == root.context.span_id
    assert dict(speculative.attributes or {})["discarded"] is True
    assert "cancelled" in [e.name for e in speculative.events]
    # Both Generate calls (discarded and confirmed) and the turn's STT stream carry this trace.
    assert {tp.split("-")[1] for tp in llm.traceparents} == {result.trace_id}
    assert result.trace_id in {tp.split("-")[1] for tp in stt.traceparents}
    attrs = dict(root.attributes or {})
    assert attrs["preemptive_used"] is False and attrs["transcript_chars"] == len(FINAL)


def test_a_conversation_leaves_the_process_tracer_provider_alone() -> None:
    """The library never installs a provider (the entry point does): spans go to the one it is given."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    before, installed = trace.get_tracer_provider(), telemetry._provider

    async def scenario() -> list[TurnResult]:
        fakes = await serve_fakes(
            FakeSpeechToText(utterance("hello", 100, 400, 500)), FakeLanguageModel("Hi."), FakeTextToSpeech()
        )
        addresses = ServiceAddresses(stt=fakes.address, llm=fakes.address, tts=fakes.address)
        async with Conversation(addresses, sink=RecordingSink(), tracer_provider=provider) as conversation:
            results = await conversation.run_file(bytes(16000), 16000, pace=False)
        await fakes.server.stop(None)
        return results

    (result,) = asyncio.run(asyncio.wait_for(scenario(), 30))
    assert trace.get_tracer_provider() is before and telemetry._provider is installed
    (root,) = [s for s in exporter.get_finished_spans() if s.name == "turn"]
    assert format(root.context.trace_id, "032x") == result.trace_id
