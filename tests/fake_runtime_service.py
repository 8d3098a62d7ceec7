"""A test-only service on the shared runtime, with a FAKE engine whose "model load" the test
controls: the loader blocks until a line arrives on stdin. Lets runtime tests observe health
NOT_SERVING while loading, then SERVING, without sleeps and without a real model.

Serves voice.tts.v1.TextToSpeech with only ListVoices implemented (returning one fake voice
inside a `tts.synthesize` server span), so trace propagation can be checked end to end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import threading
from typing import Any

import grpc

from service_runtime import Admission, EngineSlot, EnvFlags, ServiceSpec, telemetry
from voice.tts.v1 import tts_pb2, tts_pb2_grpc


class FakeVoiceList:
    voices = ("fake-voice",)


class FakeTextToSpeech(tts_pb2_grpc.TextToSpeechServicer):
    def __init__(self, slot: EngineSlot[FakeVoiceList]) -> None:
        self._slot = slot

    async def ListVoices(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        with telemetry.server_span("tts.list_voices", context) as span:
            engine = await self._slot.get(context)
            span.set_attribute("voices", len(engine.voices))
            return tts_pb2.ListVoicesResponse(
                voices=[tts_pb2.Voice(name=v, backend="fake", is_default=True) for v in engine.voices]
            )

    async def Synthesize(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        # Holds the call open until the client cancels or the server shuts down:
        # lets tests observe in-flight calls during a graceful stop.
        yield tts_pb2.SynthesizeResponse(text=request.text)
        await asyncio.Event().wait()


def _add_arguments(flags: EnvFlags) -> None:
    parser = flags.parser
    parser.add_argument("--fail-load", action="store_true", help="make the fake load fail")
    parser.add_argument(
        "--on-load",
        choices=["stdin", "serve", "segfault", "hang"],
        default="stdin",
        help="stdin: load when a line arrives; serve: at once; segfault: die of SIGSEGV "
        "(a native crash); hang: never finish loading",
    )


def _create(args: argparse.Namespace, server: grpc.aio.Server, admission: Admission) -> Any:
    slot: EngineSlot[FakeVoiceList] = EngineSlot("fake-service")
    tts_pb2_grpc.add_TextToSpeechServicer_to_server(FakeTextToSpeech(slot), server)

    def load() -> dict[str, str]:
        if args.on_load == "stdin":
            sys.stdin.readline()  # the test "finishes loading" by writing a line
        elif args.on_load == "segfault":
            os.kill(os.getpid(), signal.SIGSEGV)
        elif args.on_load == "hang":
            threading.Event().wait()
        if args.fail_load:
            raise RuntimeError("fake model file is corrupt")
        slot.set(FakeVoiceList())
        return {"backend": "fake", "model": "fake-voice"}

    return load


SPEC = ServiceSpec("fake", ["voice.tts.v1.TextToSpeech"], _add_arguments, _create, default_port=0)

if __name__ == "__main__":
    SPEC.main()
