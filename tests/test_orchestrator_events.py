"""The typed UI events a front end sees during a turn, consumed as an async stream (fakes)."""

from __future__ import annotations

import asyncio
import json

from orchestrator import Conversation, ConversationEvent, EventKind, EventQueue, ServiceAddresses
from tests.fakes import FakeLanguageModel, FakeSpeechToText, FakeTextToSpeech, RecordingSink, serve_fakes, utterance


def test_an_async_consumer_sees_the_turn_as_typed_json_ready_events() -> None:
    reply = "Fine. Thanks."

    async def scenario() -> list[ConversationEvent]:
        fakes = await serve_fakes(
            FakeSpeechToText(utterance("how are you", 100, 400, 500)), FakeLanguageModel(reply), FakeTextToSpeech()
        )
        events = EventQueue()
        seen: list[ConversationEvent] = []

        async def consume() -> None:  # what a websocket handler does
            async for event in events:
                json.dumps(event.to_dict())
                seen.append(event)

        consumer = asyncio.create_task(consume())
        address = fakes.address
        async with Conversation(
            ServiceAddresses(stt=address, llm=address, tts=address), sink=RecordingSink(realtime=False), listener=events
        ) as conversation:
            await conversation.run_file(bytes(32000), 16000, pace=False)
        events.close()
        await asyncio.wait_for(consumer, 10)
        await fakes.server.stop(None)
        return seen

    seen = asyncio.run(asyncio.wait_for(scenario(), 30))
    kinds = [e.kind for e in seen]
    assert kinds[:3] == [EventKind.SPEECH_STARTED, EventKind.INTERIM, EventKind.FINAL]
    assert kinds[-1] is EventKind.TURN
    assert "".join(e.text for e in seen if e.kind is EventKind.REPLY_DELTA) == reply
    (final,) = [e for e in seen if e.kind is EventKind.FINAL]
    assert final.text == "how are you"
    turn = seen[-1]
    assert turn.result is not None and turn.result.reply == reply
    record = turn.to_dict()
    assert record["kind"] == "turn" and record["result"]["transcript"] == "how are you"
    assert "audio" not in record["result"]
