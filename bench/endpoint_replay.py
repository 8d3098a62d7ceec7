"""Offline check of the end-of-turn policy on every fixture (evidence for stt_service.endpointing).

    python -m bench.endpoint_replay --collect      # real STT + LLM -> tests/fixtures/end_of_turn_candidates.json
    python -m bench.endpoint_replay                # the policy in stt_service.endpointing on that data

Collect: each fixture streams (faster than real time; the STT endpoints on audio time, and with
`end_of_turn_hints` and no hint sent no candidate ends the utterance before 1000 ms of silence)
through the real StreamingRecognize with the orchestrator's settings (32 ms candidate). Every
CANDIDATE_FINAL is kept with the silence that followed it in the audio: up to the frame where the
VAD heard speech again (CANDIDATE_RETRACTED), or "final" for the last one (the user is done).
Each candidate text is scored by the real LLM twice: in a fresh session (Prefill) and with the
history the bench's streaming conversation had before that fixture in its first round (Generate with
`score_end_of_turn`, the held reply's path; history from bench/results.json).

Evaluate: per candidate, the endpoint silence the policy picks and what it means:
premature (a pause candidate whose endpoint is not longer than the pause), late (the last
candidate waits the long endpoint), ok.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import grpc

from bench.fixtures import MAX_TURN_MS, load_utterances
from stt_service.endpointing import EndpointConfig, UtteranceTracker
from voice.llm.v1 import llm_pb2, llm_pb2_grpc
from voice.stt.v1 import stt_pb2, stt_pb2_grpc

BENCH_DIR = Path(__file__).resolve().parent
DATA = BENCH_DIR.parent / "tests" / "fixtures" / "end_of_turn_candidates.json"
EVENT = stt_pb2.StreamingRecognizeResponse
FRAME_MS = 32  # VAD frame: the last silent frame before a resume is one frame before the RETRACT
# The orchestrator's candidate pause (orchestrator.listening.HINTED_CANDIDATE_MS, one VAD frame):
# tests/fixtures/end_of_turn_candidates.json was collected with it (2026-12-05; 100 ms before).
CANDIDATE_MS = 32
LATE_MS = 900  # bench.latency.LATE_ENDPOINT_MS


async def candidates_of(stub: stt_pb2_grpc.SpeechToTextStub, pcm: bytes, rate: int) -> list[dict[str, Any]]:
    """The CANDIDATE_FINALs of one clip with the silence (ms) that followed each (None: the last)."""
    config = stt_pb2.RecognitionConfig(
        sample_rate_hz=rate, encoding=stt_pb2.LINEAR16, candidate_silence_ms=CANDIDATE_MS, end_of_turn_hints=True
    )
    chunk = rate * 2 * 20 // 1000

    async def requests() -> Any:
        yield stt_pb2.StreamingRecognizeRequest(config=config)
        for start in range(0, len(pcm), chunk):
            yield stt_pb2.StreamingRecognizeRequest(audio=pcm[start : start + chunk])

    out: list[dict[str, Any]] = []
    async for event in stub.StreamingRecognize(requests(), timeout=120):
        if event.event == EVENT.CANDIDATE_FINAL:
            out.append(
                {"text": event.text, "end_ms": event.end_ms, "at_ms": event.audio_position_ms, "silence_ms": None}
            )
        elif event.event == EVENT.CANDIDATE_RETRACTED and out and out[-1]["silence_ms"] is None:
            out[-1]["silence_ms"] = event.audio_position_ms - event.end_ms - FRAME_MS
        elif event.event == EVENT.FINAL:
            if out and out[-1]["silence_ms"] is None:
                out[-1]["final"] = True
            out.append({"text": event.text, "final_event": True, "endpoint_ms": event.endpoint_silence_ms})
    return out


def bench_history(results: Path) -> dict[str, list[tuple[str, str]]]:
    """Per fixture: the (user, assistant) turns the bench's streaming conversation had before it in
    the first round (every round opens a new conversation, so its history never spans rounds)."""
    rows = [r for r in json.loads(results.read_text())["turns"] if r["mode"] == "streaming" and "error" not in r]
    first_round = rows[0]["label"].split()[0] if rows else ""
    rows = [r for r in rows if r["label"].split()[0] == first_round]
    out: dict[str, list[tuple[str, str]]] = {}
    for i, row in enumerate(rows):
        out.setdefault(row["fixture"], [(r["transcript"], r["reply"]) for r in rows[:i]])
    return out


async def score_fresh(llm: llm_pb2_grpc.LanguageModelStub, session: str, text: str) -> float:
    reply = await llm.Prefill(llm_pb2.PrefillRequest(session_id=session, text=text), timeout=120)
    return round(reply.end_of_turn_probability, 4)


async def score_with_history(
    llm: llm_pb2_grpc.LanguageModelStub, session: str, history: list[tuple[str, str]], text: str
) -> float:
    turn_id = f"t{uuid.uuid4().hex[:8]}"
    messages = [
        llm_pb2.ChatMessage(role=role, content=c) for u, a in history for role, c in (("user", u), ("assistant", a))
    ]
    request = llm_pb2.GenerateRequest(
        session_id=session,
        messages=[llm_pb2.ChatMessage(role="user", content=text)],
        history=messages,
        max_tokens=1,
        turn_id=turn_id,
        score_end_of_turn=True,
        sampling=llm_pb2.SamplingOptions(temperature=0.0),
    )
    probability = -1.0
    async for part in llm.Generate(request, timeout=300):
        if part.HasField("end_of_turn_probability"):
            probability = part.end_of_turn_probability
    await llm.DiscardTurn(llm_pb2.DiscardTurnRequest(session_id=session, turn_id=turn_id), timeout=60)
    return round(probability, 4)


def variants(text: str) -> dict[str, str]:
    """The transcript as written, and with a capital first letter (tiny.en sometimes writes none)."""
    text = text.strip()
    return {"as_is": text, "capitalized": text[:1].upper() + text[1:]}


async def collect(names: list[str] | None, results: Path) -> list[dict[str, Any]]:
    from service_runtime.launcher import ServiceProcess

    procs = {kind: ServiceProcess(kind, port=0) for kind in ("stt", "llm")}
    try:
        for proc in procs.values():
            proc.wait_serving(600)
        history = bench_history(results)
        out: list[dict[str, Any]] = []
        async with (
            grpc.aio.insecure_channel(procs["stt"].address) as stt_channel,
            grpc.aio.insecure_channel(procs["llm"].address) as llm_channel,
        ):
            stt, llm = stt_pb2_grpc.SpeechToTextStub(stt_channel), llm_pb2_grpc.LanguageModelStub(llm_channel)
            run = uuid.uuid4().hex[:6]
            for utt in load_utterances(names=names, max_ms=MAX_TURN_MS):  # as bench.__main__
                events = await candidates_of(stt, utt.pcm, utt.sample_rate_hz)
                cands = [e for e in events if "final_event" not in e]
                for cand in cands:
                    cand["scores"] = {}
                    for label, text in variants(cand["text"]).items():
                        if label != "as_is" and text == cand["text"].strip():
                            continue
                        cand["scores"][f"fresh_{label}"] = await score_fresh(llm, f"fresh-{run}-{utt.name}", text)
                        for condition, turns in (("history", None), ("recent2", 2)):
                            if label == "as_is" or turns is None:
                                before = history.get(utt.name, [])
                                cand["scores"][f"{condition}_{label}"] = await score_with_history(
                                    llm, f"{condition}-{run}-{utt.name}", before[-turns:] if turns else before, text
                                )
                finals = [e for e in events if "final_event" in e]
                row = {
                    "fixture": utt.name,
                    "kind": utt.kind,
                    "reference": utt.text,
                    "pause_ms": utt.pause_ms,
                    "candidates": cands,
                    "final": finals[-1]["text"] if finals else "",
                }
                out.append(row)
                print(json.dumps(row), flush=True)
    finally:
        for proc in procs.values():
            proc.terminate()
    return out


def evaluate(rows: list[dict[str, Any]], score_key: str, config: EndpointConfig) -> dict[str, int]:
    """Print the policy's decision per candidate; counts of late / premature fixtures."""
    tracker = UtteranceTracker(config)
    counts = {"ok": 0, "late": 0, "premature": 0}
    print(f"\n== scores: {score_key}")
    print(f"{'fixture':<19} {'text':<58} {'score':>5} {'silence':>7} {'endpoint':>8}  decision")
    for row in rows:
        verdict = "ok"
        for cand in row["candidates"]:
            score = cand["scores"].get(score_key, cand["scores"].get(score_key.replace("capitalized", "as_is")))
            endpoint = tracker.endpoint_for(cand["text"], score)
            silence = cand["silence_ms"]
            if silence is None:  # the user is done: any endpoint is right, the long one is late
                decision = "late" if endpoint >= LATE_MS else "ok"
                shown = "final"
            else:
                decision = "PREMATURE" if endpoint <= silence else "waited"
                shown = str(silence)
            if decision == "PREMATURE":
                verdict = "premature"
            elif decision == "late" and verdict == "ok":
                verdict = "late"
            print(f"{row['fixture']:<19} {cand['text'][:58]:<58} {score:>5.2f} {shown:>7} {endpoint:>8}  {decision}")
        counts[verdict] += 1
    print(f"-> {counts}")
    return counts


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.endpoint_replay", description=__doc__)
    p.add_argument("--collect", action="store_true", help="run the real STT + LLM (else: evaluate the saved data)")
    p.add_argument("--fixtures", help="comma-separated fixture names (default: all the bench uses)")
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--history-from", type=Path, default=BENCH_DIR / "results.json")
    args = p.parse_args(argv)
    names = args.fixtures.split(",") if args.fixtures else None
    if args.collect:
        rows = asyncio.run(collect(names, args.history_from))
        args.data.write_text(json.dumps(rows, indent=1) + "\n")
    rows = json.loads(args.data.read_text())
    config = EndpointConfig(hints=True, candidate_ms=CANDIDATE_MS)
    for key in ("history_as_is", "recent2_as_is", "fresh_as_is", "history_capitalized", "fresh_capitalized"):
        evaluate(rows, key, config)


if __name__ == "__main__":
    main()
