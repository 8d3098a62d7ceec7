"""Turn timing as a pure function of a turn's marks and outcome (no services)."""

from __future__ import annotations

from orchestrator.timing import Mark, Outcome, Timeline, turn_result

OUTCOME = Outcome(
    mode="streaming",
    session_id="conv-1",
    trace_id="ab" * 16,
    transcript="hi",
    utterance_index=0,
    streamed_reply="Hello there, frie",
    final_text="Hello there, friend.",
    audio=b"\x00\x00" * 22050,
    sample_rate_hz=22050,
)


def test_figures_are_ms_from_the_end_of_speech_and_missing_marks_are_none() -> None:
    at = {Mark.SPEECH_END: 10.0, Mark.STT_FINAL: 10.3, Mark.FIRST_TOKEN: 10.35, Mark.PLAYBACK_START: 10.5}
    result = turn_result(at, OUTCOME)
    assert round(result.stt_final_ms or 0) == 300 and round(result.llm_ttft_ms or 0) == 350
    assert result.dead_air_ms == result.playback_start_ms and round(result.dead_air_ms or 0) == 500
    assert result.tts_ttfa_ms is None and result.total_ms is None
    assert result.audio_s == 1.0 and result.reply == "Hello there, friend." == result.heard_reply


def test_a_barged_in_reply_is_what_was_generated_and_heard_is_kept_apart() -> None:
    outcome = Outcome(**{**OUTCOME.__dict__, "barge_in": True, "heard": "Hello"})
    result = turn_result({Mark.SPEECH_END: 1.0}, outcome)
    assert result.reply == "Hello there, frie" and result.heard_reply == "Hello" and result.barge_in


def test_first_time_wins_and_observers_see_each_mark_once() -> None:
    seen: list[tuple[Mark, float]] = []
    timeline = Timeline()
    timeline.observers.append(lambda mark, t, _attrs: seen.append((mark, t)))
    timeline.mark(Mark.FIRST_TOKEN, 1.0)
    timeline.mark(Mark.FIRST_TOKEN, 2.0)
    timeline.mark(Mark.SPEECH_END, 0.5)
    timeline.mark(Mark.SPEECH_END, 0.7, again=True)  # the FINAL moves the end of speech
    assert timeline.at == {Mark.FIRST_TOKEN: 1.0, Mark.SPEECH_END: 0.7}
    assert seen == [(Mark.FIRST_TOKEN, 1.0), (Mark.SPEECH_END, 0.5), (Mark.SPEECH_END, 0.7)]
    assert timeline.held() == {"first_token": 1.0}
