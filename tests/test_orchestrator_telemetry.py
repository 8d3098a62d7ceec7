"""Each turn is one trace: root span `turn`, child `playback`, trace context on every RPC (fakes)."""

from __future__ import annotations

import asyncio

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from orchestrator.config import ServiceAddresses
from orchestrator.pipeline import Conversation, TurnResult
from service_runtime import telemetry
from tests.fakes import FakeLanguageModel, FakeSpeechToText, FakeTextToSpeech, RecordingSink, serve_fakes, utterance


def test_each_turn_is_one_trace_with_latency_attributes_and_propagated_context() -> None:
    telemetry.setup_tracing("orchestrator")
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    steps = [*utterance("first question", 100, 400, 500), *utterance("second one", 700, 900, 1000, index=1)]

    async def scenario() -> tuple[list[TurnResult], FakeLanguageModel, FakeTextToSpeech]:
        llm, tts = FakeLanguageModel("Fine. Thanks."), FakeTextToSpeech()
        fakes = await serve_fakes(FakeSpeechToText(steps), llm, tts)
        addresses = ServiceAddresses(stt=fakes.address, llm=fakes.address, tts=fakes.address)
        async with Conversation(addresses, sink=RecordingSink(), barge_in=False) as conversation:
            results = await conversation.run_file(bytes(32000), 16000, pace=False)
        await fakes.server.stop(None)
        return results, llm, tts

    results, llm, tts = asyncio.run(asyncio.wait_for(scenario(), 30))
    spans = exporter.get_finished_spans()
    turns = [s for s in spans if s.name == "turn"]
    assert len(results) == 2 and len(turns) == 2
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
