"""Dead air in the browser playground vs `orchestrator talk`, on the same spoken audio, side by side.

    python -m bench.web_dead_air [--rounds 2] [--use-running]

For each clip: `talk` (the Conversation fed the WAV at real-time pace, as `talk --input`) and the
page in headless Chromium with the same WAV as its fake microphone (the page's capture worklet,
the socket, the server's Conversation, the page's playback worklet). Reports the server's dead
air for both and the page's own figure (last speech sample captured → first reply sample out of
the speaker, on the page's clock). Needs Debian's chromium. Writes bench/web_dead_air.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

from bench.chromium import HEADLESS_FLAGS
from orchestrator import MemorySink, ServiceAddresses
from orchestrator.audio import STT_SAMPLE_RATE_HZ, load_wav_pcm16, write_wav
from orchestrator.web.adapter import ConversationOptions
from orchestrator.web.server import WebOptions, start_server
from service_runtime.launcher import ServiceProcess
from voice.llm.v1 import llm_pb2

CLIPS = ["weather_paris", "timer", "leap_year", "tokyo_time", "living_room_lights"]
FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "audio"
OUT = Path(__file__).resolve().parent / "web_dead_air.json"
FLAGS = [*HEADLESS_FLAGS, "--use-fake-ui-for-media-stream"]


def clip_pcm(name: str) -> bytes:
    """The clip with 0.5 s of silence before and 2 s after (the same audio for both paths)."""
    silence = bytes(STT_SAMPLE_RATE_HZ)  # 0.5 s of s16
    return silence + load_wav_pcm16(FIXTURES / f"{name}.wav") + silence * 4


async def talk(options: ConversationOptions, pcm: bytes) -> dict[str, float | None]:
    conversation = options.conversation(sink=MemorySink(realtime=True), listener=lambda _e: None, barge_in=True)
    async with conversation:
        results = await conversation.run_file(pcm, STT_SAMPLE_RATE_HZ, pace=True)
    if not results:
        return {"talk_ms": None, "talk_stt_final_ms": None}
    return {"talk_ms": results[0].dead_air_ms, "talk_stt_final_ms": results[0].stt_final_ms}


async def page(options: ConversationOptions, pcm: bytes, browser: Any) -> dict[str, float | None]:
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "mic.wav"
        write_wav(wav, pcm, STT_SAMPLE_RATE_HZ)
        runner, url = await start_server(WebOptions(port=0, conversation=options))
        instance = await browser.launch(
            executable_path="/usr/bin/chromium", args=[*FLAGS, f"--use-file-for-fake-audio-capture={wav}%noloop"]
        )
        try:
            context = await instance.new_context(bypass_csp=True)
            tab = await context.new_page()
            await tab.goto(url)
            await tab.click("#start")
            await tab.wait_for_function(
                "window.voiceAgent.turns.length && window.voiceAgent.turns[0].waterfall", timeout=180_000
            )
            turn = await tab.evaluate("window.voiceAgent.turns[0]")
        finally:
            await instance.close()
            await runner.cleanup()
    rows = {row["key"]: row["ms"] for row in turn["waterfall"]}
    return {
        "page_server_ms": rows["dead_air_ms"],
        "page_heard_ms": turn["pageDeadAirMs"],
        "page_stt_final_ms": rows["stt_final_ms"],
    }


async def measure(addresses: ServiceAddresses, rounds: int) -> list[dict[str, Any]]:
    from playwright.async_api import async_playwright

    options = ConversationOptions(
        addresses=addresses, sampling=llm_pb2.SamplingOptions(temperature=0.0, seed=7), max_tokens=40
    )
    rows: list[dict[str, Any]] = []
    async with async_playwright() as p:
        for round_ in range(rounds):
            for name in CLIPS:
                pcm = clip_pcm(name)
                # Alternate which path goes first: the machine's load drifts.
                if round_ % 2:
                    measured = {**await page(options, pcm, p.chromium), **await talk(options, pcm)}
                else:
                    measured = {**await talk(options, pcm), **await page(options, pcm, p.chromium)}
                row = {"clip": name, "round": round_, **measured}
                print(json.dumps(row), flush=True)
                rows.append(row)
    return rows


def report(rows: list[dict[str, Any]]) -> dict[str, Any]:
    def median(key: str) -> float | None:
        values = [r[key] for r in rows if r.get(key) is not None]
        return round(statistics.median(values), 1) if values else None

    def median_diff(a: str, b: str) -> float | None:
        values = [r[a] - r[b] for r in rows if r.get(a) is not None and r.get(b) is not None]
        return round(statistics.median(values), 1) if values else None

    summary = {
        "turns": len(rows),
        "talk_dead_air_ms_p50": median("talk_ms"),
        "page_server_dead_air_ms_p50": median("page_server_ms"),
        "page_heard_dead_air_ms_p50": median("page_heard_ms"),
        "page_heard_minus_talk_ms_p50": median_diff("page_heard_ms", "talk_ms"),
        # Same turn, so free of the machine's load: what the browser path adds after the server.
        "page_heard_minus_page_server_ms_p50": median_diff("page_heard_ms", "page_server_ms"),
        "talk_stt_final_ms_p50": median("talk_stt_final_ms"),
        "page_stt_final_ms_p50": median("page_stt_final_ms"),
    }
    keys = ("talk_ms", "page_server_ms", "page_heard_ms", "talk_stt_final_ms", "page_stt_final_ms")
    print(f"\n{'clip':<20}{'talk':>8}{'page (server)':>15}{'page (heard)':>14}{'STT final talk/page':>22}")
    for r in rows:
        c = [f"{r[k]:.0f}" if r.get(k) is not None else "-" for k in keys]
        print(f"{r['clip']:<20}{c[0]:>8}{c[1]:>15}{c[2]:>14}{c[3] + ' / ' + c[4]:>22}")
    print(json.dumps(summary, indent=1))
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.web_dead_air", description=__doc__)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--use-running", action="store_true", help="use the services at STT_ADDRESS… (make serve)")
    args = parser.parse_args()
    procs: dict[str, ServiceProcess] = {}
    try:
        if args.use_running:
            addresses = ServiceAddresses.from_env()
        else:
            procs = {kind: ServiceProcess(kind) for kind in ("stt", "llm", "tts")}
            for proc in procs.values():
                proc.wait_serving(300)
            addresses = ServiceAddresses(stt=procs["stt"].address, llm=procs["llm"].address, tts=procs["tts"].address)
        rows = asyncio.run(measure(addresses, args.rounds))
    finally:
        for proc in procs.values():
            proc.terminate()
    OUT.write_text(json.dumps({"rows": rows, "summary": report(rows)}, indent=1) + "\n")
    print(f"written {OUT}")


if __name__ == "__main__":
    main()
