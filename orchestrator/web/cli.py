"""`orchestrator web`: its flags (with environment fallbacks) and the entry point."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from orchestrator import ServiceDownError, check_services
from orchestrator.web.adapter import ConversationOptions, TurnLog
from orchestrator.web.server import WebOptions, run_server
from service_runtime.config import EnvFlags, int_at_least, int_in


def add_web_arguments(parser: argparse.ArgumentParser) -> None:
    env = os.environ.get
    parser.add_argument(
        "--host", default=env("WEB_HOST", "127.0.0.1"), help="bind address (env WEB_HOST, default %(default)s)"
    )
    # Numbers through EnvFlags: a bad WEB_PORT / WEB_MAX_SESSIONS is a usage error, not a traceback.
    flags = EnvFlags(parser, "WEB")
    flags.add("--port", 8080, "port, default %(default)s", type=int_in(0, 65535))
    parser.add_argument(
        "--tls-cert",
        type=Path,
        default=env("WEB_TLS_CERT") or None,
        help="PEM certificate: serve HTTPS (env WEB_TLS_CERT)",
    )
    parser.add_argument(
        "--tls-key", type=Path, default=env("WEB_TLS_KEY") or None, help="PEM private key (env WEB_TLS_KEY)"
    )
    flags.add("--max-sessions", 4, "concurrent conversations, default %(default)s", type=int_at_least(1))
    parser.add_argument(
        "--allow-origin",
        action="append",
        default=[],
        metavar="URL",
        help="another origin whose pages may open a conversation (repeat)",
    )


def web_options(args: argparse.Namespace) -> WebOptions:
    return WebOptions(
        host=args.host,
        port=args.port,
        max_sessions=args.max_sessions,
        allowed_origins=tuple(args.allow_origin),
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        conversation=ConversationOptions.from_args(args),
        log=TurnLog(quiet=args.quiet, json_path=args.json),
    )


async def run_web(args: argparse.Namespace) -> int:
    options = web_options(args)
    if (options.tls_cert is None) != (options.tls_key is None):
        print("--tls-cert and --tls-key go together", flush=True)
        return 1
    addresses = ", ".join(f"{kind} {address}" for kind, address in options.conversation.addresses.items())
    print(
        f"orchestrator web: {options.scheme}, mode {options.conversation.mode}, "
        f"max {options.max_sessions} sessions; services {addresses}",
        flush=True,
    )
    if options.host not in ("127.0.0.1", "localhost", "::1") and options.tls_cert is None:
        print("note: browsers allow the microphone only on https:// or localhost; use --tls-cert/--tls-key", flush=True)
    try:
        await check_services(options.conversation.addresses)
    except ServiceDownError as error:
        print(f"warning: {error} (the page will say so until it is up)", flush=True)
    await run_server(options)
    return 0
