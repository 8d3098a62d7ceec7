"""Fast tests of the orchestrator's chain against fake STT/LLM/TTS gRPC servicers (seconds)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import numpy as np
import pytest

from orchestrator import Conversation, TurnResult
from orchestrator.audio import AudioSink, load_wav_pcm16, rms, write_wav
from orchestrator.config import ServiceAddresses
from orchestrator.events import EventKind
from orchestrator.turn import Unit, heard_text
from tests.fakes import (
    Ev,
    FakeLanguageModel,
    FakeServices,
    FakeSpeechToText,
    FakeTextToSpeech,
    ManualSink,
    RecordingSink,
    SttStep,
    serve_fakes,
    utterance,
)
from tests.scenarios import CANDIDATE, FINAL, SAMPLES_PER_CHAR, reply_to, retracted_candidate

T = TypeVar("T")
WAIT_S = 10.0


def silence(seconds: float) -> bytes:
    return bytes(int(seconds * 16000) * 2)


def spoken_samples(*sentences: str) -> int:
    """Samples FakeTextToSpeech produces for these sentences."""
    return sum(len(s.strip()) * SAMPLES_PER_CHAR for s in sentences)


def run(scenario: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(asyncio.wait_for(scenario(), 60))


async def start(
    stt: FakeSpeechToText, llm: FakeLanguageModel, sink: AudioSink, **kwargs: Any
) -> tuple[FakeServices, Conversation]:
    fakes = await serve_fakes(stt, llm, FakeTextToSpeech(samples_per_char=SAMPLES_PER_CHAR))
    address = fakes.address
    conversation = Conversation(ServiceAddresses(stt=address, llm=address, tts=address), sink=sink, **kwargs)
    return fakes, conversation


async def wait(event: asyncio.Event | Awaitable[Any], what: str) -> None:
    awaitable = event.wait() if isinstance(event, asyncio.Event) else event
    try:
        await asyncio.wait_for(awaitable, WAIT_S)
    except asyncio.TimeoutError:
        pytest.fail(f"timed out waiting for {what}")


def test_deltas_reach_tts_and_sink_before_the_llm_finishes() -> None:
    reply = "Hello there. This second sentence comes much later."

    async def scenario() -> list[TurnResult]:
        llm = FakeLanguageModel(reply, hold_after_words=2)
        sink = RecordingSink()
        fakes, conversation = await start(FakeSpeechToText(utterance("what is up", 200, 800, 1000)), llm, sink)
        task = asyncio.create_task(conversation.run_file(silence(1.2), 16000, pace=False))
        # The LLM is stuck after "Hello there. ": audio must already be playing.
        await wait(sink.audio_started, "first audio while the LLM is still generating")
        assert llm.held.is_set() and not llm.generation_finished.is_set()
        llm.release.set()
        results = await asyncio.wait_for(task, WAIT_S)
        await conversation.close()
        await fakes.server.stop(None)
        return results

    results = run(scenario)
    assert len(results) == 1
    turn = results[0]
    assert turn.transcript == "what is up"
    assert turn.reply == reply
    assert turn.heard_reply == reply and not turn.barge_in
    assert turn.tts_ttfa_ms is not None and turn.llm_done_ms is not None
    assert turn.tts_ttfa_ms < turn.llm_done_ms
    assert len(turn.audio) // 2 == spoken_samples("Hello there.", "This second sentence comes much later.")
    assert rms(turn.audio) > 0.05
    assert turn.dead_air_ms is not None and turn.dead_air_ms >= 0
    assert turn.mode == "streaming" and len(turn.trace_id) == 32


def test_preemptive_reply_is_held_until_the_final_confirms_it() -> None:
    text = "what time is it"
    reply = "It is noon."
    shown: list[str] = []

    async def scenario() -> tuple[list[TurnResult], FakeServices, RecordingSink]:
        final_gate = asyncio.Event()
        steps = [
            SttStep(Ev.SPEECH_STARTED, at_ms=100, start_ms=100),
            SttStep(Ev.CANDIDATE_FINAL, text, at_ms=600, start_ms=100, end_ms=500),
            SttStep(Ev.FINAL, text, after=final_gate, start_ms=100, end_ms=500),
        ]
        llm = FakeLanguageModel(reply)
        sink = RecordingSink()
        fakes, conversation = await start(
            FakeSpeechToText(steps),
            llm,
            sink,
            listener=lambda event: event.kind is EventKind.REPLY_DELTA and shown.append(event.text),
        )
        task = asyncio.create_task(conversation.run_file(silence(1.0), 16000, pace=False))
        await wait(llm.generation_finished, "the speculative generation")
        await wait(fakes.tts.first_audio_sent, "speculative audio")
        await wait(fakes.stt.input_ended, "the whole file sent")
        assert not sink.written, "speculative audio must be held until the FINAL"
        final_gate.set()
        results = await asyncio.wait_for(task, WAIT_S)
        await conversation.close()
        await fakes.server.stop(None)
        return results, fakes, sink

    results, fakes, sink = run(scenario)
    assert len(results) == 1
    turn = results[0]
    assert turn.preemptive_used and turn.reply == reply
    assert "".join(shown) == reply, "the listener shows the held reply once it is confirmed"
    assert len(fakes.llm.generations) == 1, "the confirmed candidate's work is reused, not redone"
    assert sum(sink.written) // 2 == spoken_samples(reply)
    assert turn.tts_ttfa_ms is not None and turn.stt_final_ms is not None and turn.dead_air_ms is not None
    # The audio was synthesized before the FINAL (the scenario only sends the FINAL after the fake
    # TTS sent it); which of the two streams the orchestrator reads first is a race, so only the
    # release order is asserted: playback starts at the FINAL, not before.
    assert turn.stt_final_ms <= turn.dead_air_ms and turn.tts_ttfa_ms <= turn.dead_air_ms


def test_retracted_candidate_work_is_cancelled_and_never_played() -> None:
    outcome = run(retracted_candidate)
    assert outcome.written_before_retraction == 0, "speculative audio was played before the FINAL"
    assert [r.transcript for r in outcome.results] == [FINAL]
    turn, llm = outcome.results[0], outcome.fakes.llm
    expected = reply_to(FINAL)
    assert turn.reply == expected and not turn.preemptive_used
    assert [g.user_text for g in llm.generations] == [CANDIDATE, FINAL]
    assert llm.generations[0].cancelled
    speculative_tts = outcome.fakes.tts.syntheses[0]
    assert speculative_tts.texts == ["Sure. "], "the speculative synthesis got no text after the retraction"
    assert len(turn.audio) // 2 == spoken_samples("Sure.", f"You asked {FINAL}.")
    assert outcome.history == [("user", FINAL), ("assistant", expected)], "the discarded turn left a trace"
    speculative, real = llm.generations
    assert speculative.turn_id and real.turn_id and speculative.turn_id != real.turn_id
    assert llm.discarded == [(outcome.session_id, speculative.turn_id, 2)], "user + interrupted marker"


def test_barge_in_stops_playback_cancels_work_and_records_what_was_heard() -> None:
    story = "Once upon a time there was a fox. The fox was very quick and clever. The end."
    first, second = "Once upon a time there was a fox.", "The fox was very quick and clever."

    async def scenario() -> tuple[list[TurnResult], FakeServices, Conversation, ManualSink]:
        barge_gate = asyncio.Event()
        steps = [
            *utterance("tell me a story", 100, 300, 400),
            SttStep(Ev.SPEECH_STARTED, after=barge_gate, start_ms=900, utterance_index=1),
            SttStep(Ev.FINAL, "stop", after=barge_gate, start_ms=900, end_ms=1100, utterance_index=1),
        ]
        llm = FakeLanguageModel(lambda t: story if "story" in t else "Okay.", hold_after_words=15)
        sink = ManualSink()
        fakes, conversation = await start(FakeSpeechToText(steps), llm, sink)
        task = asyncio.create_task(conversation.run_file(silence(0.6), 16000, pace=True))
        await wait(sink.wait_for_samples(spoken_samples(first, second)), "two sentences of audio")
        assert llm.held.is_set(), "the LLM is still generating (held) during playback"
        # The user has heard the first sentence and half of the second one, then speaks.
        sink.played = spoken_samples(first) + spoken_samples(second) // 2
        barge_gate.set()
        await wait(llm.generation_cancelled, "the LLM Generate to be cancelled")
        await wait(fakes.tts.syntheses[0].ended.wait(), "the TTS stream to end")
        sink.release.set()
        results = await asyncio.wait_for(task, WAIT_S)
        await fakes.server.stop(None)
        return results, fakes, conversation, sink

    results, fakes, conversation, sink = run(scenario)
    assert [r.transcript for r in results] == ["tell me a story", "stop"]
    interrupted, after = results
    heard = "Once upon a time there was a fox. The fox was"
    assert interrupted.barge_in and interrupted.heard_reply == heard
    assert sink.stops and sink.stops[0] == spoken_samples(first) + spoken_samples(second) // 2
    assert len(interrupted.audio) // 2 == sink.stops[0], "the result holds only the audio that was played"
    assert set(interrupted.cancelled_rpcs) == {"llm", "tts"}
    assert fakes.llm.heard_records == [heard]
    assert fakes.llm.sessions[conversation.session_id] == [
        ("user", "tell me a story"),
        ("assistant", heard),
        ("user", "stop"),
        ("assistant", "Okay."),
    ]
    assert not after.barge_in and after.reply == "Okay."


def test_sync_mode_waits_for_the_whole_transcript_reply_and_audio() -> None:
    reply = "First sentence here. Second sentence here."

    async def scenario() -> tuple[list[TurnResult], FakeServices, RecordingSink]:
        llm = FakeLanguageModel(reply, hold_after_words=3)
        stt = FakeSpeechToText(utterance("hello", 200, 700, 900), recognize_text="hello from recognize")
        sink = RecordingSink()
        fakes, conversation = await start(stt, llm, sink, mode="sync")
        task = asyncio.create_task(conversation.run_file(silence(1.2), 16000, pace=False))
        await wait(llm.held, "the LLM mid-reply")
        assert not fakes.tts.syntheses, "sync mode must not call TTS before the reply is complete"
        llm.release.set()
        results = await asyncio.wait_for(task, WAIT_S)
        await conversation.close()
        await fakes.server.stop(None)
        return results, fakes, sink

    results, fakes, sink = run(scenario)
    (turn,) = results
    assert turn.mode == "sync"
    assert turn.transcript == "hello from recognize", "sync mode transcribes the utterance with Recognize"
    assert len(fakes.stt.recognize_requests[0].audio) > 0
    assert [s.texts for s in fakes.tts.syntheses] == [[reply]], "one Synthesize call on the whole reply"
    assert turn.llm_done_ms is not None and turn.tts_ttfa_ms is not None and turn.dead_air_ms is not None
    assert turn.llm_done_ms <= turn.tts_ttfa_ms <= turn.dead_air_ms
    assert sum(sink.written) // 2 == spoken_samples("First sentence here.", "Second sentence here.")


def test_turn_result_json_line_has_the_report_fields() -> None:
    result = TurnResult(
        mode="streaming",
        transcript="hi",
        reply="Hello.",
        heard_reply="Hello.",
        dead_air_ms=412.34,
        stt_final_ms=300.0,
        llm_ttft_ms=350.0,
        first_sentence_ms=380.0,
        tts_ttfa_ms=410.0,
        playback_start_ms=412.34,
        total_ms=1500.0,
        barge_in=False,
        preemptive_used=True,
        trace_id="ab" * 16,
        session_id="conv-1",
        audio=b"\x01\x00" * 10,
        sample_rate_hz=22050,
    )
    line = result.to_json()
    assert "\n" not in line
    record = json.loads(line)
    for key in (
        "mode",
        "transcript",
        "reply",
        "dead_air_ms",
        "stt_final_ms",
        "llm_ttft_ms",
        "tts_ttfa_ms",
        "total_ms",
        "barge_in",
        "trace_id",
    ):
        assert key in record
    assert record["dead_air_ms"] == 412.3 and "audio" not in record


def test_heard_text_counts_whole_sentences_and_the_played_fraction_of_words() -> None:
    units = [
        Unit("One two three four.", offset=0, samples=400, complete=True),
        Unit("Five six seven eight.", offset=400, samples=400, complete=True),
    ]
    assert heard_text(units, 0) == ""
    assert heard_text(units, 199) == "One"
    assert heard_text(units, 400) == "One two three four."
    assert heard_text(units, 700) == "One two three four. Five six seven"
    assert heard_text(units, 10_000) == "One two three four. Five six seven eight."


def test_wav_input_of_any_rate_and_channels_becomes_16k_mono(tmp_path: Any) -> None:
    rate = 44100
    t = np.arange(rate) / rate
    tone = (0.5 * np.sin(2 * np.pi * 440 * t) * 32767).astype("<i2")
    stereo = np.stack([tone, tone], axis=1).reshape(-1)
    path = tmp_path / "stereo.wav"
    # write a 2-channel header by hand: write_wav is mono only
    import struct

    data = stereo.tobytes()
    header = struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        36 + len(data),
        b"WAVE",
        b"fmt ",
        16,
        1,
        2,
        rate,
        rate * 4,
        4,
        16,
        b"data",
        len(data),
    )
    path.write_bytes(header + data)
    pcm = load_wav_pcm16(path)
    assert abs(len(pcm) // 2 - 16000) <= 2
    assert 0.3 < rms(pcm) < 0.4
    mono = tmp_path / "mono.wav"
    write_wav(mono, pcm, 16000)
    assert load_wav_pcm16(mono) == pcm
