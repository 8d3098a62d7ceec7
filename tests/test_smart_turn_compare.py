"""The Smart Turn comparison's bookkeeping (bench/smart_turn_compare.py): where Pipecat's VAD
would stop and which fixture verdict a set of Smart Turn scores gives. Pure: no model."""

from __future__ import annotations

from bench.smart_turn_compare import RATE, Pause, pauses, verdict
from stt_service.vad import Region


def ms(value: int) -> int:
    return value * RATE // 1000


def test_the_vad_stops_after_gaps_of_at_least_its_stop_time_and_at_the_end() -> None:
    regions = [Region(ms(100), ms(1000)), Region(ms(1150), ms(2000)), Region(ms(2600), ms(3000))]
    assert pauses(regions, vad_stop_ms=200) == [
        Pause(ms(2000) + ms(200), 600),  # the 150 ms gap never stops the VAD
        Pause(ms(3000) + ms(200), None),
    ]


def test_a_pause_judged_complete_is_premature_even_when_the_end_is_judged_right() -> None:
    mid, end = Pause(ms(1200), 600), Pause(ms(3200), None)
    assert verdict([(mid, 0.9), (end, 0.9)]) == "premature"
    assert verdict([(mid, 0.2), (end, 0.3)]) == "late"
    assert verdict([(mid, 0.2), (end, 0.8)]) == "ok"
    assert verdict([(end, 0.5)]) == "late", "0.5 is not > 0.5: Pipecat calls it incomplete"
