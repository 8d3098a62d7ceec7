"""bench.endpoint_replay scores each candidate with the history the bench's conversation had before
that fixture: one round's turns only (the bench opens a new conversation every round)."""

from __future__ import annotations

import json
from pathlib import Path

from bench.endpoint_replay import bench_history


def test_the_history_of_a_fixture_is_the_turns_before_it_in_one_round(tmp_path: Path) -> None:
    def turn(label: str, fixture: str) -> dict[str, str]:
        return {"mode": "streaming", "label": label, "fixture": fixture, "transcript": f"{fixture}?", "reply": label}

    turns = [
        turn("r1/2 1/2", "a"),
        {"mode": "sync", "label": "r1/2 1/2", "fixture": "a", "transcript": "x", "reply": "y"},
        turn("r1/2 2/2", "b"),
        turn("r2/2 1/2", "a"),
        turn("r2/2 2/2", "b"),
    ]
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"turns": turns}))
    history = bench_history(results)
    assert history["a"] == []
    assert history["b"] == [("a?", "r1/2 1/2")], "round 2's turns, another conversation, leaked in"
