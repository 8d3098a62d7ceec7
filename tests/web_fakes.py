"""The web app on port 0 in front of the fake services (tests/fakes.py): for protocol and page tests."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from orchestrator.config import ServiceAddresses
from orchestrator.web.adapter import ConversationOptions
from orchestrator.web.server import WebOptions, start_server
from tests.fakes import FakeLanguageModel, FakeServices, FakeSpeechToText, FakeTextToSpeech, serve_fakes, utterance

REPLY = "Hello there. How can I help?"


@contextlib.asynccontextmanager
async def web_server(
    addresses: Callable[[str], ServiceAddresses] | None = None,
    *,
    port: int = 0,
    samples_per_char: int = 16,
    **kwargs: Any,
) -> AsyncIterator[tuple[str, FakeServices]]:
    """The web app on port 0 in front of fake services whose STT hears one utterance."""
    fakes = await serve_fakes(
        FakeSpeechToText(utterance("hello agent", start_ms=100, end_ms=600, final_at_ms=900)),
        FakeLanguageModel(REPLY),
        FakeTextToSpeech(samples_per_char=samples_per_char),
    )
    address = fakes.address
    options = WebOptions(
        port=port,
        conversation=ConversationOptions(
            addresses=(addresses or (lambda a: ServiceAddresses(stt=a, llm=a, tts=a)))(address), preemptive=False
        ),
        **kwargs,
    )
    runner, url = await start_server(options)
    try:
        yield url, fakes
    finally:
        await runner.cleanup()
        await fakes.server.stop(None)
