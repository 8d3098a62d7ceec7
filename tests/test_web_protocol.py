"""`orchestrator web` without a browser: the WebSocket protocol (docs/WEB.md) against fake services.

A raw WebSocket client plays a page: a conversation turn end to end, then every kind of bad
input, each refused with its close code and reason while the server keeps serving.
"""

from __future__ import annotations

import asyncio
import json
import signal
import ssl
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest

from orchestrator.config import ServiceAddresses
from orchestrator.web import protocol
from orchestrator.web.adapter import TurnLog
from orchestrator.web.server import STATIC
from tests.web_fakes import REPLY, web_server

T = TypeVar("T")
FRAME = bytes(protocol.FRAME_BYTES)
START = {"type": "start", "sample_rate_hz": 16000, "channels": 1, "encoding": "s16le", "frame_ms": 20}


def run(scenario: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(asyncio.wait_for(scenario(), 60))


def ws_url(url: str) -> str:
    return url.replace("http", "ws", 1) + "ws"


async def events_until(ws: aiohttp.ClientWebSocketResponse, wanted: str) -> list[dict[str, Any]]:
    """JSON events (binary audio counted as {"type": "audio"}) up to and including `wanted`."""
    seen: list[dict[str, Any]] = []
    async for msg in ws:
        if msg.type == aiohttp.WSMsgType.BINARY:
            seen.append({"type": "audio", "bytes": len(msg.data)})
            continue
        event = json.loads(msg.data)
        seen.append(event)
        if event["type"] == wanted:
            return seen
    raise AssertionError(f"socket closed before {wanted!r}: {seen}")


async def refused(url: str, *messages: str | bytes | dict[str, Any]) -> tuple[int | None, str, list[dict[str, Any]]]:
    """Send `messages` on a fresh socket; returns the close code, close reason and the events seen."""
    async with aiohttp.ClientSession() as http, http.ws_connect(ws_url(url)) as ws:
        for message in messages:
            if ws.closed:
                break  # refused part-way (e.g. a flood): the rest is never sent
            try:
                if isinstance(message, bytes):
                    await ws.send_bytes(message)
                elif isinstance(message, dict):
                    await ws.send_json(message)
                else:
                    await ws.send_str(message)
            except ConnectionResetError:
                break
        events: list[dict[str, Any]] = []
        while True:
            msg = await ws.receive(timeout=10)
            if msg.type == aiohttp.WSMsgType.TEXT:
                events.append(json.loads(msg.data))
            elif msg.type == aiohttp.WSMsgType.CLOSE:
                return ws.close_code, str(msg.extra or ""), events
            elif msg.type != aiohttp.WSMsgType.BINARY:
                raise AssertionError(f"socket ended without a close frame: {msg}")


async def still_serving(url: str) -> None:
    async with aiohttp.ClientSession() as http, http.ws_connect(ws_url(url)) as ws:
        await ws.send_json(START)
        assert (await ws.receive_json(timeout=10))["type"] == "ready"


def test_a_turn_over_the_socket_gives_transcript_reply_audio_and_waterfall(tmp_path: Path) -> None:
    turns_jsonl = tmp_path / "turns.jsonl"

    async def scenario() -> list[dict[str, Any]]:
        log = TurnLog(quiet=True, json_path=turns_jsonl)
        async with (
            web_server(log=log) as (url, _fakes),
            aiohttp.ClientSession() as http,
            http.ws_connect(ws_url(url)) as ws,
        ):
            await ws.send_json(START)
            ready = await ws.receive_json(timeout=10)
            assert ready["type"] == "ready" and ready["barge_in"] is True and ready["frame_bytes"] == 640
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            for i in range(60):  # 1.2 s of "microphone", at its real-time pace
                await asyncio.sleep(max(0.0, t0 + i * 0.02 - loop.time()))
                await ws.send_bytes(FRAME)
            events = await events_until(ws, "turn")
            await ws.send_json({"type": "stop"})
            events += await events_until(ws, "ended")
            return events

    events = run(scenario)
    kinds = [e["type"] for e in events]
    assert kinds.index("speech_started") < kinds.index("final") < kinds.index("audio_start") < kinds.index("turn")
    assert kinds.index("audio_start") < kinds.index("audio") < kinds.index("audio_end")
    final = next(e for e in events if e["type"] == "final")
    assert final["text"] == "hello agent"
    assert "".join(e["text"] for e in events if e["type"] == "reply") == REPLY
    start = next(e for e in events if e["type"] == "audio_start")
    audio = sum(e["bytes"] for e in events if e["type"] == "audio")
    assert start["reply"] == 1
    assert start["sample_rate_hz"] == 16000 and audio == 2 * 16 * len("Hello there.How can I help?")
    turn = next(e for e in events if e["type"] == "turn")
    assert turn["transcript"] == "hello agent" and turn["reply"] == REPLY and not turn["barge_in"]
    waterfall = {row["key"]: row["ms"] for row in turn["waterfall"]}
    assert list(waterfall) == ["stt_final_ms", "llm_ttft_ms", "first_sentence_ms", "tts_ttfa_ms", "dead_air_ms"]
    assert all(ms is not None for ms in waterfall.values()), waterfall
    assert waterfall["stt_final_ms"] <= waterfall["llm_ttft_ms"] <= waterfall["tts_ttfa_ms"] <= waterfall["dead_air_ms"]
    assert turn["trace_url"] is None  # no OTLP endpoint: no dead link
    # Speech ended at 600 ms of input (sample 9600); the mapping back is to within a frame or so.
    assert turn["speech_end_sample"] is not None and abs(turn["speech_end_sample"] - 9600) <= 3 * 320
    # --json: the server appends the turn like `talk --json` does.
    [record] = [json.loads(line) for line in turns_jsonl.read_text().splitlines()]
    assert record["transcript"] == "hello agent" and record["input"] == "web" and record["session_id"]


@pytest.mark.parametrize(
    ("messages", "code", "error"),
    [
        pytest.param([START, bytes(100)], protocol.CLOSE_INVALID, "bad_frame", id="short-frame"),
        pytest.param([START, bytes(642)], protocol.CLOSE_INVALID, "bad_frame", id="long-frame"),
        pytest.param([{**START, "sample_rate_hz": 48000}], protocol.CLOSE_UNSUPPORTED, "bad_format", id="48k"),
        pytest.param([{**START, "channels": 2}], protocol.CLOSE_UNSUPPORTED, "bad_format", id="stereo"),
        pytest.param([{**START, "encoding": "f32le"}], protocol.CLOSE_UNSUPPORTED, "bad_format", id="float"),
        pytest.param([{**START, "barge_in": "yes"}], protocol.CLOSE_INVALID, "bad_message", id="barge-in-type"),
        pytest.param([FRAME], protocol.CLOSE_UNSUPPORTED, "no_start", id="audio-before-start"),
        pytest.param([{"type": "stop"}], protocol.CLOSE_POLICY, "no_start", id="stop-before-start"),
        pytest.param(["{not json"], protocol.CLOSE_INVALID, "bad_json", id="malformed-json"),
        pytest.param(["[1, 2]"], protocol.CLOSE_INVALID, "bad_message", id="json-not-object"),
        pytest.param([{"type": "hack"}], protocol.CLOSE_POLICY, "unknown_type", id="unknown-type"),
        pytest.param([START, {"type": "start"}], protocol.CLOSE_POLICY, "unexpected", id="second-start"),
        pytest.param([START, "x" * 5000], protocol.CLOSE_TOO_BIG, "too_big", id="long-text"),
        pytest.param([START, *[FRAME] * 250], protocol.CLOSE_POLICY, "too_fast", id="faster-than-real-time"),
        pytest.param(
            [START, {"type": "played", "reply": 1, "samples": -5}],
            protocol.CLOSE_INVALID,
            "bad_message",
            id="played-negative",
        ),
        pytest.param(
            [START, {"type": "played", "reply": "1", "samples": 5}],
            protocol.CLOSE_INVALID,
            "bad_message",
            id="played-string",
        ),
        pytest.param(
            [START, {"type": "played", "reply": 1, "samples": True}],
            protocol.CLOSE_INVALID,
            "bad_message",
            id="played-bool",
        ),
        pytest.param(
            [START, *[{"type": "played", "reply": 1, "samples": 0}] * 60],
            protocol.CLOSE_POLICY,
            "too_fast",
            id="played-flood",
        ),
    ],
)
def test_bad_input_is_refused_with_a_close_code_and_the_server_keeps_serving(
    messages: list[Any], code: int, error: str
) -> None:
    async def scenario() -> tuple[int | None, str, list[dict[str, Any]]]:
        async with web_server() as (url, _fakes):
            result = await refused(url, *messages)
            await still_serving(url)
            return result

    close_code, reason, events = run(scenario)
    assert close_code == code, (close_code, reason, events)
    errors = [e for e in events if e["type"] == "error"]
    assert len(errors) == 1 and errors[0]["code"] == error, events
    assert reason and len(reason.encode()) <= 123, reason


def test_an_oversized_message_is_refused_before_it_is_buffered() -> None:
    async def scenario() -> int | None:
        async with web_server() as (url, _fakes):
            async with aiohttp.ClientSession() as http, http.ws_connect(ws_url(url)) as ws:
                await ws.send_json(START)
                await ws.receive_json(timeout=10)
                await ws.send_bytes(bytes(protocol.MAX_MESSAGE_BYTES + 1))
                async for _msg in ws:
                    pass
                code = ws.close_code
            await still_serving(url)
            return code

    assert run(scenario) == protocol.CLOSE_TOO_BIG


def test_sessions_over_the_limit_are_told_why_and_the_next_one_gets_in() -> None:
    async def scenario() -> tuple[int | None, str, list[dict[str, Any]]]:
        async with web_server(max_sessions=1) as (url, _fakes), aiohttp.ClientSession() as http:
            async with http.ws_connect(ws_url(url)) as first:
                await first.send_json(START)
                assert (await first.receive_json(timeout=10))["type"] == "ready"
                result = await refused(url, START)
            await still_serving(url)  # the first one has gone: room again
            return result

    code, reason, events = run(scenario)
    assert code == protocol.CLOSE_TRY_LATER
    assert "too many sessions (limit 1)" in reason
    assert events[0]["code"] == "too_many_sessions"


def test_a_service_that_is_down_is_named() -> None:
    dead = "127.0.0.1:9"  # discard port: nothing listens

    async def scenario() -> tuple[int | None, str, list[dict[str, Any]]]:
        async with web_server(lambda up: ServiceAddresses(stt=up, llm=dead, tts=up)) as (url, _fakes):
            return await refused(url, START)

    code, reason, events = run(scenario)
    assert code == protocol.CLOSE_INTERNAL
    assert events[-1]["code"] == "service_down" and events[-1]["service"] == "llm-service", events
    assert "llm-service is not reachable at 127.0.0.1:9" in events[-1]["message"]
    assert reason.startswith("llm-service is not reachable")


def test_a_service_that_goes_down_mid_conversation_is_named() -> None:
    async def scenario() -> tuple[int | None, str, list[dict[str, Any]]]:
        async with web_server() as (url, fakes), aiohttp.ClientSession() as http, http.ws_connect(ws_url(url)) as ws:
            await ws.send_json(START)
            assert (await ws.receive_json(timeout=10))["type"] == "ready"
            await fakes.server.stop(None)  # all three go: the open STT stream is the first to notice
            events: list[dict[str, Any]] = []
            while True:
                msg = await ws.receive(timeout=30)
                if msg.type == aiohttp.WSMsgType.TEXT:
                    events.append(json.loads(msg.data))
                elif msg.type == aiohttp.WSMsgType.CLOSE:
                    return ws.close_code, str(msg.extra or ""), events

    code, reason, events = run(scenario)
    assert code == protocol.CLOSE_INTERNAL, (code, reason, events)
    assert events[-1]["type"] == "error" and events[-1]["service"] == "stt-service", events
    assert reason.startswith("stt-service"), reason


@pytest.mark.parametrize(
    ("host", "origin", "allowed_origins", "status"),
    [
        pytest.param(None, None, (), 101, id="no-origin-not-a-browser"),
        pytest.param(None, "same", (), 101, id="same-origin"),
        pytest.param(None, "http://evil.example", (), 403, id="cross-site"),
        pytest.param("evil.example:8080", "http://evil.example:8080", (), 403, id="dns-rebinding"),
        pytest.param("box.lan:8080", "http://box.lan:8080", ("http://box.lan:8080",), 101, id="allowed-host"),
        pytest.param(None, "http://app.example", ("http://app.example",), 101, id="allowed-origin"),
    ],
)
def test_origin_check(host: str | None, origin: str | None, allowed_origins: tuple[str, ...], status: int) -> None:
    async def scenario() -> int:
        async with web_server(allowed_origins=allowed_origins) as (url, _fakes), aiohttp.ClientSession() as http:
            headers = {}
            if host is not None:
                headers["Host"] = host
            if origin is not None:
                headers["Origin"] = url.rstrip("/") if origin == "same" else origin
            try:
                async with http.ws_connect(ws_url(url), headers=headers) as ws:
                    await ws.close()
                    return 101
            except aiohttp.WSServerHandshakeError as error:
                return error.status

    assert run(scenario) == status


def test_the_page_is_served_whole_from_the_package_no_cdn() -> None:
    async def scenario() -> dict[str, tuple[int, str, str]]:
        async with web_server() as (url, _fakes), aiohttp.ClientSession() as http:
            pages = {}
            for path in (
                "",
                "static/app.js",
                "static/capture-worklet.js",
                "static/playback-worklet.js",
                "static/style.css",
            ):
                async with http.get(url + path) as response:
                    pages[path] = (
                        response.status,
                        response.headers.get("Content-Security-Policy", ""),
                        await response.text(),
                    )
            return pages

    pages = run(scenario)
    for path, (status, csp, body) in pages.items():
        assert status == 200, path
        assert "default-src 'self'" in csp
        assert "http://" not in body and "https://" not in body, f"{path} loads something from elsewhere"
    html = pages[""][2]
    for asset in ("app.js", "style.css"):
        assert f"/static/{asset}" in html
    assert {p.name for p in STATIC.iterdir()} >= {"index.html", "app.js", "capture-worklet.js", "playback-worklet.js"}


def test_tls(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip

    async def scenario() -> tuple[str, str]:
        async with web_server(tls_cert=cert, tls_key=key) as (url, _fakes):
            client = ssl.create_default_context(cafile=str(cert))
            client.check_hostname = False
            async with aiohttp.ClientSession() as http:
                async with http.get(url, ssl=client) as response:
                    assert response.status == 200
                async with http.ws_connect(ws_url(url), ssl=client) as ws:
                    await ws.send_json(START)
                    ready = await ws.receive_json(timeout=10)
            return url, ready["type"]

    url, first = run(scenario)
    assert url.startswith("https://") and first == "ready"


def test_cli_help_and_half_a_tls_pair() -> None:
    helped = subprocess.run(
        [sys.executable, "-m", "orchestrator", "web", "--help"], capture_output=True, text=True, check=True
    )
    for flag in ("--host", "--port", "--tls-cert", "--tls-key", "--max-sessions", "--allow-origin", "--llm-address"):
        assert flag in helped.stdout
    half = subprocess.run(
        [sys.executable, "-m", "orchestrator", "web", "--port", "0", "--tls-cert", "x.pem"],
        capture_output=True,
        text=True,
    )
    assert half.returncode == 1 and "--tls-cert and --tls-key go together" in half.stdout


def test_the_cli_serves_the_page_says_which_service_is_down_and_stops_cleanly_on_sigterm() -> None:
    async def scenario() -> tuple[list[str], int, int]:
        dead = "127.0.0.1:9"
        proc = await asyncio.create_subprocess_exec(
            *[sys.executable, "-m", "orchestrator", "web", "--port", "0"],
            *["--stt-address", dead, "--llm-address", dead, "--tts-address", dead],
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        assert proc.stdout is not None
        lines: list[str] = []
        while not (lines and lines[-1].startswith("open ")):
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            assert line, f"the server ended early: {lines}"
            lines.append(line.decode().strip())
        url = lines[-1].split()[1]
        async with aiohttp.ClientSession() as http, http.get(url) as response:
            status = response.status
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 30)
        return lines, status, code

    lines, status, code = run(scenario)
    assert status == 200 and code == 0, (lines, status, code)
    assert any("stt-service is not reachable at 127.0.0.1:9" in line for line in lines), lines
    assert lines[-1].startswith("open http://127.0.0.1:") and not lines[-1].startswith("open http://127.0.0.1:0/")
