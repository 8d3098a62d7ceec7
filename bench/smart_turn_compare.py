"""Pipecat's Smart Turn v3 (audio-only end-of-turn model) on the bench fixtures, side by side with
this project's decisions (issue 15: "compare against Pipecat's Smart Turn v3 idea").

    python -m bench.smart_turn_compare [--results bench/results.json]   # ~1 min, no services

Smart Turn v3.2 (the `smart-turn-v3.2-cpu.onnx` that the `pipecat-ai` 1.14.0 wheel bundles, BSD-2;
fetched once with `pip download --no-deps` into ~/.cache/voice-agent/smart-turn/, with the wheel's
numpy Whisper feature extractor) is run the way Pipecat's recommended set-up runs it: the VAD
reports the end of speech after 0.2 s of silence (`VADParams(stop_secs=0.2)`), Smart Turn reads
the audio of the turn so far (the last 8 s), > 0.5 means complete and ends the turn; otherwise the
turn goes on until the user speaks again or 3 s of silence pass (`SmartTurnParams(stop_secs=3)`).
Per fixture: premature = a pause the user went on after was judged complete; late = the real end
was judged incomplete (the turn then ends after 3 s); ok. This project's decisions are read from a
bench results file (the streaming turns, all rounds). Writes bench/smart_turn_compare.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import time
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np

from bench.fixtures import MAX_TURN_MS, load_utterances
from stt_service.vad import FRAME_MS, Region, SileroVad, speech_regions

BENCH_DIR = Path(__file__).resolve().parent
CACHE = Path.home() / ".cache" / "voice-agent" / "smart-turn"
PIPECAT = "pipecat-ai==1.14.0"
MODEL_MEMBER = "pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx"
FEATURES_MEMBER = "pipecat/audio/turn/smart_turn/_whisper_features.py"
RATE = 16000
VAD_STOP_MS = 200  # Pipecat's VADParams(stop_secs=0.2), the set-up recommended with Smart Turn
FALLBACK_MS = 3000  # SmartTurnParams(stop_secs=3): an "incomplete" turn still ends after this silence
WINDOW_S = 8  # the model reads the last 8 s (zero-padded in front when shorter)
COMPLETE = 0.5


@dataclass(frozen=True)
class Pause:
    """Where the VAD reported the end of speech: the audio up to `stop_sample` is what Smart Turn
    reads; `silence_ms` is how long the user then stayed silent (None: the clip's end, the user is done)."""

    stop_sample: int
    silence_ms: int | None


def pauses(regions: list[Region], vad_stop_ms: int = VAD_STOP_MS) -> list[Pause]:
    """The VAD stops of a clip: after every speech region followed by at least `vad_stop_ms` of
    silence (shorter gaps never stop the VAD), and after the last region."""
    stop = vad_stop_ms * RATE // 1000
    out: list[Pause] = []
    for region, following in zip(regions, [*regions[1:], None], strict=True):
        if following is None:
            out.append(Pause(region.end + stop, None))
        else:
            gap = following.start - region.end
            if gap >= stop:
                out.append(Pause(region.end + stop, gap * 1000 // RATE))
    return out


def verdict(decisions: list[tuple[Pause, float]]) -> str:
    """'premature' when a pause the user went on after scored complete, else 'late' when the real
    end scored incomplete, else 'ok'."""
    if any(p.silence_ms is not None and score > COMPLETE for p, score in decisions):
        return "premature"
    ends = [score for p, score in decisions if p.silence_ms is None]
    return "late" if ends and ends[-1] <= COMPLETE else "ok"


def fetch(cache: Path = CACHE) -> tuple[Path, ModuleType]:
    """The ONNX model and the feature extractor module from the pipecat-ai wheel (downloaded once)."""
    model, features = cache / Path(MODEL_MEMBER).name, cache / "whisper_features.py"
    if not (model.is_file() and features.is_file()):
        cache.mkdir(parents=True, exist_ok=True)
        print(f"downloading {PIPECAT} (wheel only, no dependencies) into {cache} ...", flush=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(cache), PIPECAT], check=True
        )
        wheel = next(cache.glob("pipecat_ai-*.whl"))
        with zipfile.ZipFile(wheel) as archive:
            model.write_bytes(archive.read(MODEL_MEMBER))
            features.write_bytes(archive.read(FEATURES_MEMBER))
    spec = importlib.util.spec_from_file_location("smart_turn_whisper_features", features)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return model, module


class SmartTurn:
    def __init__(self, model: Path, features: ModuleType) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.inter_op_num_threads = options.intra_op_num_threads = 1  # as Pipecat's default cpu_count=1
        self._session = onnxruntime.InferenceSession(str(model), sess_options=options)
        self._features = features

    def probability(self, audio: np.ndarray) -> tuple[float, float]:
        """P(complete) of the turn whose audio (16 kHz float32) ends here, and the ms it took."""
        started = time.perf_counter()
        window = audio[-WINDOW_S * RATE :]
        window = np.pad(window, (WINDOW_S * RATE - len(window), 0))
        mel = self._features.compute_whisper_log_mel_features(window, do_normalize=True)
        out = self._session.run(None, {"input_features": np.expand_dims(mel, 0)})
        return float(np.asarray(out[0]).reshape(-1)[0]), (time.perf_counter() - started) * 1000


def ours(results: Path) -> dict[str, Counter[str]]:
    """This project's streaming decisions per fixture (all rounds) from a bench results file."""
    if not results.is_file():
        return {}
    counts: dict[str, Counter[str]] = {}
    for turn in json.loads(results.read_text()).get("turns", []):
        if turn.get("mode") == "streaming":
            counts.setdefault(turn["fixture"], Counter())[turn.get("decision", "?")] += 1
    return counts


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.smart_turn_compare", description=__doc__)
    p.add_argument("--results", type=Path, default=BENCH_DIR / "results.json", help="bench results with our decisions")
    p.add_argument("--out", type=Path, default=BENCH_DIR / "smart_turn_compare.json")
    args = p.parse_args(argv)
    model, features = fetch()
    smart_turn, vad = SmartTurn(model, features), SileroVad()
    our = ours(args.results)
    rows, inference_ms = [], []
    min_silence_frames = -(-VAD_STOP_MS // FRAME_MS)
    for utt in load_utterances(max_ms=MAX_TURN_MS):
        audio = np.frombuffer(utt.pcm, dtype=np.int16).astype(np.float32) / 32768.0
        assert utt.sample_rate_hz == RATE, f"{utt.name}: {utt.sample_rate_hz} Hz"
        regions = speech_regions(vad.probabilities(audio), min_silence_frames=min_silence_frames)
        decisions = []
        for pause in pauses(regions):
            score, ms = smart_turn.probability(audio[: min(pause.stop_sample, len(audio))])
            decisions.append((pause, score))
            inference_ms.append(ms)
        mine = our.get(utt.name, Counter())
        rows.append(
            {
                "fixture": utt.name,
                "kind": utt.kind,
                "text": utt.text,
                "pauses": [
                    {
                        "at_ms": p.stop_sample * 1000 // RATE - VAD_STOP_MS,
                        "silence_ms": p.silence_ms,
                        "p_complete": round(s, 3),
                    }
                    for p, s in decisions
                ],
                "smart_turn": verdict(decisions),
                "ours": dict(mine),
            }
        )
        shown = " ".join(f"{s:.2f}@{'end' if p.silence_ms is None else p.silence_ms}" for p, s in decisions)
        print(f"{utt.name:<26} smart-turn {rows[-1]['smart_turn']:<9} ours {dict(mine)!s:<22} {shown}", flush=True)
    totals = {
        "smart_turn": dict(Counter(r["smart_turn"] for r in rows)),
        "ours_turns": dict(sum((Counter(r["ours"]) for r in rows), Counter())),
        "smart_turn_inference_ms_median": round(float(np.median(inference_ms)), 1),
    }
    args.out.write_text(json.dumps({"totals": totals, "fixtures": rows}, indent=1) + "\n")
    print(
        f"\nSmart Turn v3.2 per fixture: {totals['smart_turn']}; ours per turn ({args.results.name}): "
        f"{totals['ours_turns']}; Smart Turn inference {totals['smart_turn_inference_ms_median']} ms median "
        f"(1 thread, 8 s window)\n-> {args.out}"
    )


if __name__ == "__main__":
    main()
