"""The aiohttp application: the page, its static files, and `/ws` (one conversation per socket).

Admission happens before a conversation starts: the Origin check (refused with HTTP 403) and the
session limit (the socket is accepted, told why, and closed with 1013 so the page can say so).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import signal
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web

from orchestrator.web import protocol
from orchestrator.web.adapter import ConversationOptions, TurnLog
from orchestrator.web.session import WebSession

log = logging.getLogger("orchestrator.web")
STATIC = Path(__file__).with_name("static")
# Content-Security-Policy: everything from this origin only (the page works offline, no CDN).
CSP = "default-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; frame-ancestors 'none'"


@dataclass(frozen=True)
class WebOptions:
    host: str = "127.0.0.1"
    port: int = 8080
    max_sessions: int = 4
    allowed_origins: tuple[str, ...] = ()
    tls_cert: Path | None = None
    tls_key: Path | None = None
    conversation: ConversationOptions = field(default_factory=ConversationOptions)
    log: TurnLog = field(default_factory=lambda: TurnLog(quiet=True))

    @property
    def scheme(self) -> str:
        return "https" if self.tls_cert else "http"


SESSIONS = web.AppKey("sessions", set[WebSession])
OPTIONS = web.AppKey("options", WebOptions)


def _trusted_host(host: str, options: WebOptions) -> bool:
    """A Host a page may be served under: an IP literal, localhost, or an allowed origin's host.

    A DNS name other than those could be a rebinding attack (evil.example resolving to 127.0.0.1).
    """
    name = urlsplit(f"//{host}").hostname or ""
    if name == "localhost" or name in {urlsplit(o).hostname for o in options.allowed_origins}:
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def origin_allowed(request: web.Request, options: WebOptions) -> bool:
    """Same-origin pages on a trusted host, or an origin given with --allow-origin.

    Clients that send no Origin (not a browser: no cross-site risk) are let in.
    """
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    if origin.rstrip("/") in {o.rstrip("/") for o in options.allowed_origins}:
        return True
    parts = urlsplit(origin)
    same = parts.netloc == request.host and parts.scheme in ("http", "https")
    return same and _trusted_host(request.host, options)


async def index(_request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


async def socket(request: web.Request) -> web.StreamResponse:
    options = request.app[OPTIONS]
    if not origin_allowed(request, options):
        origin = request.headers.get("Origin")
        log.warning("refused a WebSocket from origin %s", origin)
        raise web.HTTPForbidden(text=f"origin {origin} is not allowed (see --allow-origin)")
    ws = web.WebSocketResponse(max_msg_size=protocol.MAX_MESSAGE_BYTES, heartbeat=20.0)
    await ws.prepare(request)
    sessions = request.app[SESSIONS]
    # A session whose page has closed the socket no longer counts (its clean-up may still run).
    if sum(not s.ws.closed for s in sessions) >= options.max_sessions:
        reason = f"too many sessions (limit {options.max_sessions}); try again later"
        await ws.send_json({"type": "error", "code": "too_many_sessions", "message": reason})
        await ws.close(code=protocol.CLOSE_TRY_LATER, message=protocol.close_reason(reason))
        return ws
    session = WebSession(ws, options.conversation, options.log, peer=request.remote or "?")
    sessions.add(session)
    try:
        await session.run()
    finally:
        sessions.discard(session)
    return ws


@web.middleware
async def security_headers(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    response = await handler(request)
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    return response


def create_app(options: WebOptions) -> web.Application:
    app = web.Application(middlewares=[security_headers])
    app[OPTIONS] = options
    sessions: set[WebSession] = set()
    app[SESSIONS] = sessions
    app.router.add_get("/", index)
    app.router.add_get("/ws", socket)
    app.router.add_static("/static/", STATIC)
    app.on_shutdown.append(_close_sockets)
    return app


async def _close_sockets(app: web.Application) -> None:
    sessions = app[SESSIONS]
    for session in list(sessions):
        await session.ws.close(code=1001, message=b"server shutting down")


def ssl_context(options: WebOptions) -> ssl.SSLContext | None:
    if options.tls_cert is None and options.tls_key is None:
        return None
    if options.tls_cert is None or options.tls_key is None:
        raise ValueError("--tls-cert and --tls-key go together")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(options.tls_cert, options.tls_key)
    return context


async def start_server(options: WebOptions) -> tuple[web.AppRunner, str]:
    """Start serving; returns the runner (call `cleanup()`) and the page's URL (the real port if 0)."""
    runner = web.AppRunner(create_app(options), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, options.host, options.port, ssl_context=ssl_context(options))
    await site.start()
    port = runner.addresses[0][1] if runner.addresses else options.port
    host = options.host if options.host not in ("0.0.0.0", "::") else "localhost"
    host = f"[{host}]" if ":" in host else host
    return runner, f"{options.scheme}://{host}:{port}/"


async def run_server(options: WebOptions) -> None:
    """Serve until SIGTERM or Ctrl-C: open pages are told (close 1001), then the server stops."""
    runner, url = await start_server(options)
    print(f"open {url} (Ctrl-C to stop)", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
        print("stopping: closing the open conversations", flush=True)
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        await runner.cleanup()
