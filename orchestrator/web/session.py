"""One WebSocket = one conversation: page microphone frames in, reply audio and UI events out.

The reader loop checks every client message (protocol.py) and feeds the microphone frames to
`Conversation.run` as its audio source; the conversation's listener events and the reply audio
go out through one ordered queue, so an `audio_start` always precedes its audio.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import WSMsgType, web

from orchestrator import TurnResult, check_services
from orchestrator.web import protocol
from orchestrator.web.adapter import ConversationOptions, EventAdapter, TurnLog, error_event
from orchestrator.web.playout import InputClock, Outgoing, SocketSink
from orchestrator.web.protocol import ProtocolError

log = logging.getLogger("orchestrator.web")


class WebSession:
    """Runs one conversation over an open WebSocket until either side ends it."""

    def __init__(
        self, ws: web.WebSocketResponse, options: ConversationOptions, log: TurnLog | None = None, peer: str = "?"
    ) -> None:
        self.ws = ws
        self.options = options
        self.log = log or TurnLog(quiet=True)
        self.peer = peer
        self.out: asyncio.Queue[Outgoing] = asyncio.Queue()
        self.sink = SocketSink(self.out)
        self.frames: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.clock = InputClock()
        self.received_samples = 0

    def send(self, event: dict[str, Any]) -> None:
        self.out.put_nowait(event)

    async def _writer(self) -> None:
        while True:
            item = await self.out.get()
            if item is None:
                return
            if isinstance(item, bytes):
                await self.ws.send_bytes(item)
            else:
                await self.ws.send_str(json.dumps(item, ensure_ascii=False))

    async def _source(self) -> AsyncIterator[bytes]:
        while True:
            frame = await self.frames.get()
            if frame is None:
                return
            yield frame

    def _speech_end_sample(self, result: TurnResult) -> int | None:
        """Where in the page's input the user stopped speaking (for the page's own dead-air figure)."""
        if result.dead_air_ms is None or not self.sink.begin_times:
            return None
        return self.clock.sample_at(self.sink.begin_times[-1] - result.dead_air_ms / 1000.0)

    async def run(self) -> None:
        writer = asyncio.create_task(self._writer())
        try:
            await self._serve()
            await self._close(protocol.CLOSE_NORMAL, "conversation ended", writer)
        except _Closed:
            pass
        except _ServiceFailure as error:  # its `error` event, naming the service, is already queued
            await self._close(error.close_code, error.message, writer)
        except ProtocolError as error:
            log.info("closing a session: %s", error.message)
            self.send({"type": "error", "code": error.error, "message": error.message})
            await self._close(error.close_code, error.message, writer)
        finally:
            if not writer.done():
                self.out.put_nowait(None)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(writer, 5)
            writer.cancel()

    async def _close(self, code: int, reason: str, writer: asyncio.Task[None]) -> None:
        self.out.put_nowait(None)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer, 5)  # the error event goes out before the close frame
        await self.ws.close(code=code, message=protocol.close_reason(reason))

    async def _receive_start(self) -> protocol.Start:
        try:
            msg = await self.ws.receive(timeout=protocol.START_TIMEOUT_S)
        except asyncio.TimeoutError:
            raise ProtocolError(protocol.CLOSE_POLICY, "no_start", "no start message") from None
        self._check_type(msg)
        if msg.type == WSMsgType.BINARY:
            raise ProtocolError(protocol.CLOSE_UNSUPPORTED, "no_start", "audio before the start message")
        message = protocol.parse_text(msg.data)
        if message["type"] != "start":
            raise ProtocolError(protocol.CLOSE_POLICY, "no_start", "the first message must be start")
        return protocol.parse_start(message)

    @staticmethod
    def _check_type(msg: Any) -> None:
        if msg.type == WSMsgType.ERROR:  # e.g. over max_msg_size: aiohttp already closed with 1009
            raise ProtocolError(protocol.CLOSE_TOO_BIG, "too_big", f"bad message: {msg.data}")
        if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
            raise _Closed

    async def _serve(self) -> None:
        start = await self._receive_start()
        try:
            await check_services(self.options.addresses)
        except Exception as error:
            event = error_event(error)
            self.send(event)
            raise _ServiceFailure(event["message"]) from None
        adapter = EventAdapter(self.send, self._speech_end_sample, self.log)
        conversation = self.options.conversation(sink=self.sink, listener=adapter, barge_in=start.barge_in)
        self.send(
            {
                "type": "ready",
                "protocol": protocol.PROTOCOL_VERSION,
                "session_id": conversation.session_id,
                "mode": conversation.mode,
                "barge_in": start.barge_in,
                "frame_bytes": protocol.FRAME_BYTES,
            }
        )
        self.log.line(
            f"{conversation.session_id} started (page at {self.peer}, barge-in {'on' if start.barge_in else 'off'})"
        )
        runner = asyncio.create_task(conversation.run(self._source(), pace=True))
        reader = asyncio.create_task(self._read_frames())
        try:
            done, _ = await asyncio.wait({runner, reader}, return_when=asyncio.FIRST_COMPLETED)
            if reader in done and reader.exception() is None:
                if not reader.result():  # the page went away: nobody is listening
                    return
                await asyncio.wait({runner})  # the page said stop: the replies still owed are played
            if runner.done() and runner.exception() is not None:
                event = error_event(runner.exception())  # type: ignore[arg-type]
                self.send(event)
                raise _ServiceFailure(event["message"])
            if reader.done() and reader.exception() is not None:
                raise reader.exception()  # type: ignore[misc]
            if runner.done():
                self.send({"type": "ended"})
        finally:
            for task in (runner, reader):
                task.cancel()
            await asyncio.gather(runner, reader, return_exceptions=True)
            with contextlib.suppress(Exception):
                await conversation.close()
            turns = adapter.turns
            self.log.line(f"{conversation.session_id} ended after {turns} turn{'' if turns == 1 else 's'}")

    async def _read_frames(self) -> bool:
        """Microphone frames into the conversation until the page says stop (True) or goes away."""
        rate = protocol.frame_rate(time.monotonic())
        reports = protocol.played_rate(time.monotonic())
        try:
            async for msg in self.ws:
                self._check_type(msg)
                if msg.type == WSMsgType.BINARY:
                    protocol.check_frame(msg.data)
                    rate.take(time.monotonic())
                    self.received_samples += len(msg.data) // 2
                    self.clock.record(self.received_samples, time.perf_counter())
                    self.frames.put_nowait(msg.data)
                    continue
                message = protocol.parse_text(msg.data)
                if message["type"] == "played":
                    reports.take(time.monotonic())
                    self.sink.report_played(*protocol.parse_played(message))
                    continue
                if message["type"] == "stop":
                    return True
                raise ProtocolError(protocol.CLOSE_POLICY, "unexpected", f"unexpected {message['type']!r} message")
        except _Closed:
            pass
        finally:
            self.frames.put_nowait(None)
        return False


class _Closed(Exception):
    """The client closed the socket."""


class _ServiceFailure(ProtocolError):
    def __init__(self, message: str) -> None:
        super().__init__(protocol.CLOSE_INTERNAL, "service", message)
