"""`orchestrator talk` (microphone or WAV files) and `orchestrator demo` (used by `make demo`).

orchestrator talk                                   # microphone + speaker, turn after turn
orchestrator talk --input a.wav [--input b.wav] --output reply.wav [--mode sync] [--json turns.jsonl]
orchestrator demo                                   # start the services if needed, one spoken turn
orchestrator web [--host 127.0.0.1] [--port 8080]   # a browser playground (docs/WEB.md)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from orchestrator.audio import STT_SAMPLE_RATE_HZ, AudioSink, MemorySink, WavFileSink, load_wav_pcm16
from orchestrator.clients import ServiceCallError, ServiceDownError, check_services
from orchestrator.config import CANDIDATE_SILENCE_MS, SERVICE_NAMES, SILENCE_MS, ServiceAddresses, Settings
from orchestrator.conversation import Conversation
from orchestrator.device import NoAudioDeviceError, SoundDeviceSink, check_audio_devices, microphone
from orchestrator.events import ConversationEvent, EventKind
from orchestrator.report import waterfall
from orchestrator.web.cli import add_web_arguments, run_web
from service_runtime import telemetry
from service_runtime.config import float_in, int_at_least, int_in
from service_runtime.health_wait import ServiceError

DEMO_WAV = Path(__file__).with_name("demo_question.wav")
FILE_MODE_HINT = "python -m orchestrator talk --input question.wav --output reply.wav"
EXIT_SERVICE = 2
EXIT_USAGE = 1


class Printer:
    """Live console output: interim transcript, final transcript, the reply as it is spoken."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.tty = sys.stdout.isatty()
        self.turns = 0
        self._reply_open = False
        self._interim = False
        self.json_path: Path | None = None
        self.input_name = ""

    def _line(self, text: str) -> None:
        if self._interim:
            sys.stdout.write("\r\033[K" if self.tty else "\n")
            self._interim = False
        if self._reply_open:
            sys.stdout.write("\n")
            self._reply_open = False
        print(text, flush=True)

    def __call__(self, event: ConversationEvent) -> None:
        kind, text = event.kind, event.text
        if kind is EventKind.TURN and event.result is not None:
            self.turns += 1
            result = event.result
            self._line(f"agent (heard): {result.heard_reply}" if result.barge_in else "")
            if not self.quiet:
                print(waterfall(result, self.turns), flush=True)
            if self.json_path is not None:
                record = {**result.as_dict(), "input": self.input_name}
                with self.json_path.open("a", encoding="utf-8") as out:
                    out.write(json.dumps(record, ensure_ascii=False) + "\n")
            return
        if self.quiet:
            return
        if kind is EventKind.INTERIM and text:
            if self.tty:
                sys.stdout.write(f"\r\033[K… {text}")
                sys.stdout.flush()
                self._interim = True
        elif kind is EventKind.FINAL:
            self._line(f"you: {text}")
        elif kind is EventKind.REPLY_DELTA:
            if not self._reply_open:
                sys.stdout.write("agent: ")
                self._reply_open = True
            sys.stdout.write(text)
            sys.stdout.flush()
        elif kind is EventKind.BARGE_IN:
            self._line(f"[barge-in: you interrupted; the agent heard you after {text!r}]")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="orchestrator", description="Talk to the local voice agent.")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        ServiceAddresses.add_arguments(p)
        p.add_argument("--mode", choices=["streaming", "sync"], default="streaming", help="streaming (default) or sync")
        p.add_argument("--session-id", default=None, help="LLM conversation id (default: a new random one)")
        p.add_argument("--no-preemptive", action="store_true", help="do not start replies on CANDIDATE_FINAL")
        p.add_argument("--voice", default=os.environ.get("TTS_VOICE", ""), help="TTS voice (default: the server's)")
        p.add_argument(
            "--max-tokens", type=int_at_least(0), default=0, help="LLM reply token limit (0 = server default)"
        )
        p.add_argument(
            "--temperature",
            type=float_in(0, 2),
            default=None,
            help="LLM sampling temperature (default: the server's, 0.7)",
        )
        p.add_argument(
            "--seed",
            type=int_in(0, 2**32 - 1),
            default=None,
            help="LLM sampling seed: the same words get the same reply (default: random)",
        )
        silence_ms = int_in(*SILENCE_MS, or_zero=True)
        p.add_argument(
            "--endpoint-silence-ms", type=silence_ms, default=0, help="STT long endpoint (0 = server default)"
        )
        p.add_argument(
            "--candidate-silence-ms",
            type=int_in(*CANDIDATE_SILENCE_MS, or_zero=True),
            default=0,
            help="STT candidate pause (0 = default)",
        )
        p.add_argument(
            "--min-endpoint-silence-ms",
            type=silence_ms,
            default=0,
            help="STT short endpoint, complete sentences (0 = default)",
        )
        p.add_argument("--json", type=Path, default=None, metavar="PATH", help="append one JSON line per turn")
        p.add_argument("--quiet", action="store_true", help="no live transcript or latency table")

    talk = sub.add_parser("talk", help="talk through the microphone, or feed WAV files with --input")
    common(talk)
    talk.add_argument("--input", action="append", type=Path, default=[], metavar="WAV", help="spoken WAV (repeat)")
    talk.add_argument("--output", type=Path, default=None, metavar="WAV", help="write the replies to this WAV")
    talk.add_argument("--no-pace", action="store_true", help="send files as fast as possible (no barge-in)")
    talk.add_argument("--no-barge-in", action="store_true", help="file mode: never interrupt the agent")
    talk.add_argument(
        "--barge-in",
        action="store_true",
        help="microphone mode: let speech interrupt the agent (use headphones: no echo cancellation)",
    )

    demo = sub.add_parser("demo", help="start the services if needed and run one spoken turn")
    common(demo)
    demo.add_argument("--input", type=Path, default=DEMO_WAV, metavar="WAV", help="spoken question")
    demo.add_argument("--output", type=Path, default=Path("reply.wav"), metavar="WAV", help="reply audio")
    demo.add_argument(
        "--timeout-s", type=float_in(0, low_open=True), default=600.0, help="wait this long for the services"
    )

    web = sub.add_parser("web", help="serve a page to talk to the agent from a browser (docs/WEB.md)")
    common(web)
    add_web_arguments(web)
    return parser


def _conversation(args: argparse.Namespace, sink: AudioSink, printer: Printer, barge_in: bool) -> Conversation:
    settings = Settings.from_args(args)
    return Conversation(
        ServiceAddresses.from_args(args), **settings.keywords(), barge_in=barge_in, sink=sink, listener=printer
    )


def _printer(args: argparse.Namespace) -> Printer:
    printer = Printer(quiet=args.quiet)
    printer.json_path = args.json
    return printer


async def talk_files(args: argparse.Namespace) -> int:
    inputs: list[tuple[Path, bytes]] = []
    for path in args.input:
        try:
            inputs.append((path, load_wav_pcm16(path)))
        except (OSError, ValueError) as error:
            print(f"cannot read {path}: {error}", file=sys.stderr)
            return EXIT_USAGE
    await check_services(ServiceAddresses.from_args(args))
    pace = not args.no_pace
    sink: AudioSink = WavFileSink(args.output, realtime=pace) if args.output else MemorySink(realtime=pace)
    printer = _printer(args)
    conversation = _conversation(args, sink, printer, barge_in=not args.no_barge_in)
    try:
        if not args.quiet:
            print(f"session {conversation.session_id}, mode {args.mode}", flush=True)
        for path, pcm in inputs:
            printer.input_name = str(path)
            if not args.quiet:
                print(f"▶ {path}", flush=True)
            results = await conversation.run_file(pcm, STT_SAMPLE_RATE_HZ, pace=pace)
            if not results and not args.quiet:
                print("  (no speech recognized)")
    finally:
        await conversation.close()
        sink.close()
    if args.output and not args.quiet:
        print(f"replies written to {args.output}")
    return 0


async def talk_microphone(args: argparse.Namespace) -> int:
    check_audio_devices()
    await check_services(ServiceAddresses.from_args(args))
    sink = SoundDeviceSink()
    printer = _printer(args)
    conversation = _conversation(args, sink, printer, barge_in=args.barge_in)
    print(
        f"listening (mode {args.mode}, barge-in {'on' if args.barge_in else 'off: open speakers'}); Ctrl-C to stop",
        flush=True,
    )
    try:
        await conversation.run(microphone(), pace=True)
    finally:
        await conversation.close()
        sink.close()
    return 0


def _local_port(address: str) -> bool:
    host = address.rsplit(":", 1)[0]
    return host in ("127.0.0.1", "localhost", "0.0.0.0", "[::1]")


async def demo(args: argparse.Namespace) -> int:
    addresses = ServiceAddresses.from_args(args)
    try:
        await check_services(addresses)
        print("services already SERVING: " + ", ".join(f"{SERVICE_NAMES[k]} {a}" for k, a in addresses.items()))
    except ServiceDownError as error:
        if not all(_local_port(a) for _, a in addresses.items()):
            raise
        name = SERVICE_NAMES.get(error.kind, error.kind)
        print(
            f"{name} is not up at {error.address}: starting the services (first start loads the models) ...", flush=True
        )
        await asyncio.to_thread(_start_services, args.timeout_s)
        await check_services(addresses, timeout_s=10)
    try:
        pcm = load_wav_pcm16(args.input)
    except (OSError, ValueError) as error:
        print(f"cannot read {args.input}: {error}", file=sys.stderr)
        return EXIT_USAGE
    sink = WavFileSink(args.output, realtime=True)
    printer = _printer(args)
    conversation = _conversation(args, sink, printer, barge_in=False)
    print(f"\n▶ {args.input.name}: streaming it at real-time pace into the {args.mode} chain", flush=True)
    try:
        results = await conversation.run_file(pcm, STT_SAMPLE_RATE_HZ, pace=True)
    finally:
        await conversation.close()
        sink.close()
    if not results:
        print("no speech recognized in the demo input", file=sys.stderr)
        return EXIT_USAGE
    turn = results[0]
    print(f"\ntranscript: {turn.transcript}\nreply:      {turn.reply}")
    print(f"dead air:   {turn.dead_air_ms:.0f} ms; reply audio ({turn.audio_s:.1f} s) written to {args.output}")
    print("services keep running: `make stop` ends them")
    return 0


def _start_services(timeout_s: float) -> None:
    from service_runtime import launcher

    launcher.RUN_DIR.mkdir(exist_ok=True)
    launcher.start_all(timeout_s)


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    telemetry.setup_tracing("orchestrator")
    try:
        if args.command == "demo":
            code = asyncio.run(demo(args))
        elif args.command == "web":
            code = asyncio.run(run_web(args))
        elif args.input:
            code = asyncio.run(talk_files(args))
        else:
            code = asyncio.run(talk_microphone(args))
    except NoAudioDeviceError as error:
        print(f"{error}.\nTalk through WAV files instead:\n  {FILE_MODE_HINT}", file=sys.stderr)
        code = EXIT_USAGE
    except (ServiceDownError, ServiceCallError, ServiceError) as error:
        print(str(error), file=sys.stderr)
        code = EXIT_SERVICE
    except KeyboardInterrupt:
        code = 130
    finally:
        telemetry.shutdown_tracing()
    sys.exit(code)


if __name__ == "__main__":
    main()
