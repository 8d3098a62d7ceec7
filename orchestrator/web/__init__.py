"""`orchestrator web`: a browser playground served from the orchestrator process.

One page (plain HTML/JS/CSS in `static/`, no build step, no CDN) and one WebSocket per
conversation. Each socket drives the same `Conversation` as `orchestrator talk`: the page's
microphone frames are its audio source and a socket sink streams the reply audio back.
The message schema is in docs/WEB.md; `protocol.py` holds its limits and parsing.
"""

from orchestrator.web.server import WebOptions, create_app, run_server

__all__ = ["WebOptions", "create_app", "run_server"]
