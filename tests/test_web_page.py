"""The playground page in headless Chromium against fake services: a turn, and each error a user may meet.

Fake services keep these quick; tests/test_web_real.py talks to the real models.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from orchestrator.config import ServiceAddresses
from tests.browser import chromium, page, wait_for
from tests.web_fakes import REPLY, web_server

T = TypeVar("T")
WAIT_S = 30.0


def run(scenario: Callable[[], Awaitable[T]]) -> T:
    chromium()  # skip at once, with the reason, when there is no browser
    return asyncio.run(asyncio.wait_for(scenario(), 120))


def test_a_turn_shows_transcript_reply_waterfall_and_plays_the_audio(span_exporter: InMemorySpanExporter) -> None:
    async def scenario() -> dict[str, Any]:
        # Under the page's own CSP, as a user's browser runs it: waits are on selectors (no eval).
        async with web_server(samples_per_char=160) as (url, _fakes), page(enforce_csp=True) as tab:
            await tab.goto(url)
            await tab.click("#start")
            await tab.wait_for_selector('.turn .row[data-key="dead_air_ms"]', timeout=WAIT_S * 1000)
            # The reply's audio has left the worklet once the page is back to listening.
            await tab.wait_for_selector('#status[data-state="listening"]', timeout=WAIT_S * 1000)
            return {
                "console": tab.console_log,
                "agent": await tab.evaluate("window.voiceAgent"),
                "you": await tab.inner_text(".turn .transcript"),
                "reply": await tab.inner_text(".turn .reply"),
                "dead_air": await tab.inner_text('.turn .row[data-key="dead_air_ms"] .ms'),
                "trace": await tab.inner_text(".turn .trace"),
            }

    seen = run(scenario)
    assert not [line for line in seen["console"] if "Content Security Policy" in line], seen["console"]
    assert seen["you"] == "hello agent" and seen["reply"] == REPLY
    assert seen["dead_air"].endswith(" ms"), seen["dead_air"]
    stats = seen["agent"]["stats"]
    assert stats["replies"] == 1 and stats["receivedSamples"] == 160 * len("Hello there.How can I help?")
    # Every sample received was played (the worklet reports what it output; ±1 for interpolation).
    assert abs(stats["playedSamples"] - stats["receivedSamples"]) <= 2, stats
    # The trace shown is the turn's (recorded by this test's tracer provider), not exported here.
    [turn_span] = [span for span in span_exporter.get_finished_spans() if span.name == "turn"]
    trace_id = format(turn_span.context.trace_id, "032x")
    assert seen["trace"].startswith(f"trace {trace_id[:8]}") and "not exported" in seen["trace"], seen["trace"]


def test_a_denied_microphone_says_so() -> None:
    async def scenario() -> tuple[str, str]:
        async with web_server() as (url, _fakes), page(allow_microphone=False) as tab:
            await tab.goto(url)
            await tab.click("#start")
            await wait_for(tab, "window.voiceAgent.errors.length > 0", WAIT_S, "an error")
            return await tab.inner_text("#banner-text"), await tab.get_attribute("#status", "data-state") or ""

    banner, state = run(scenario)
    assert "Microphone access was denied" in banner and state == "error"


def test_a_service_that_is_down_is_named_on_the_page() -> None:
    async def scenario() -> tuple[str, bool]:
        async with (
            web_server(lambda up: ServiceAddresses(stt=up, llm=up, tts="127.0.0.1:9")) as (url, _f),
            page() as tab,
        ):
            await tab.goto(url)
            await tab.click("#start")
            await wait_for(tab, "window.voiceAgent.errors.length > 0", WAIT_S, "an error")
            return await tab.inner_text("#banner-text"), await tab.is_visible("#reconnect")

    banner, reconnect = run(scenario)
    assert banner.startswith("tts-service: tts-service is not reachable at 127.0.0.1:9"), banner
    assert reconnect


def test_a_dropped_socket_offers_reconnect_and_reconnect_works() -> None:
    listening = "['listening', 'hearing', 'speaking'].includes(window.voiceAgent.state)"

    async def scenario() -> tuple[str, str, str]:
        async with page() as tab:
            async with web_server() as (url, _fakes):
                port = int(url.rsplit(":", 1)[1].strip("/"))
                await tab.goto(url)
                await tab.click("#start")
                await wait_for(tab, listening, WAIT_S, "the conversation")
                first = await tab.evaluate("window.voiceAgent.sessionId")
            # The server went away under the page (its shutdown closes the socket).
            await wait_for(tab, "window.voiceAgent.state === 'disconnected'", WAIT_S, "the drop noticed")
            banner = await tab.inner_text("#banner-text")
            assert await tab.is_visible("#reconnect")
            async with web_server(port=port):
                await tab.click("#reconnect")
                await wait_for(tab, listening, WAIT_S, "a new conversation")
                second = await tab.evaluate("window.voiceAgent.sessionId")
                divider = await tab.inner_text(".divider")
            assert divider.startswith("new conversation"), divider
            return banner, first, second

    banner, first, second = run(scenario)
    assert banner.startswith("Connection to the agent lost (code 100"), banner  # 1001 going away or 1006 dropped
    assert first and second and first != second


def test_stop_ends_the_conversation_after_the_reply() -> None:
    async def scenario() -> tuple[str, bool, list[str]]:
        async with web_server(samples_per_char=160) as (url, _fakes), page() as tab:
            await tab.goto(url)
            await tab.click("#start")
            await wait_for(
                tab, "window.voiceAgent.turns.length && window.voiceAgent.turns[0].waterfall", WAIT_S, "a turn"
            )
            await tab.click("#stop")
            await wait_for(tab, "window.voiceAgent.state === 'idle'", WAIT_S, "the conversation ended")
            return (
                await tab.get_attribute("#status", "data-state") or "",
                await tab.is_enabled("#start"),
                await tab.evaluate("window.voiceAgent.errors"),
            )

    state, can_start_again, errors = run(scenario)
    assert state == "idle" and can_start_again and errors == []


def test_without_chromium_the_browser_tests_skip_saying_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """In this process, not a pytest run of its own: every browser test goes through `run()`, which
    skips before its scenario starts, with the reason `pytest -rs` shows."""
    monkeypatch.setenv("CHROMIUM", "/nonexistent/chromium")

    async def scenario() -> None:
        raise AssertionError("the scenario ran without a browser")

    with pytest.raises(pytest.skip.Exception, match="no Chromium installed: apt-get install -y chromium"):
        run(scenario)
