"""A loopback HTTP proxy in front of serve-sim that records (and may echo) auth headers.

Every request's ``Authorization`` header is recorded (None when absent). With
``echo=True`` the proxy plays a careless server: it quotes the header it received in
every chat reply's text and in every error body, so tests can check that a key the
client sent never reaches a store, export, log or report.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

from _loopback import QuietHandler, serve_on_loopback


@dataclass
class Proxy:
    """A running proxy: its ``url`` (ending in ``/v1``) and what it saw."""

    url: str
    authorization: list[str | None] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)


def _echo(body: bytes, header: str) -> bytes:
    """The reply with the received header quoted in every choice (or error message)."""
    try:
        data: Any = json.loads(body)
    except ValueError:
        return body
    if not isinstance(data, dict):
        return body
    for choice in data.get("choices") or []:
        message = choice.get("message") if isinstance(choice, dict) else None
        if isinstance(message, dict) and isinstance(message.get("content"), str):
            message["content"] += f" (you sent Authorization: {header})"
    error = data.get("error")
    if isinstance(error, dict):
        error["message"] = f"{error.get('message', '')} (you sent Authorization: {header})"
    return json.dumps(data).encode()


@contextmanager
def recording_proxy(upstream: str, *, echo: bool = False) -> Iterator[Proxy]:
    """Serve a proxy to ``upstream`` (a serve-sim URL ending in ``/v1``) on loopback."""
    base = upstream.rstrip("/").removesuffix("/v1")
    client = httpx.Client(timeout=30.0)
    lock = threading.Lock()
    proxy = Proxy(url="")

    class Handler(QuietHandler):
        def _forward(self) -> None:
            header = self.headers.get("Authorization")
            with lock:
                proxy.authorization.append(header)
                proxy.paths.append(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            skip = {"host", "content-length", "connection", "accept-encoding"}
            headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
            reply = client.request(self.command, base + self.path, content=body, headers=headers)
            content = _echo(reply.content, header or "none") if echo else reply.content
            self.send_response(reply.status_code)
            for key, value in reply.headers.items():
                if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)

        do_GET = _forward
        do_POST = _forward
        do_DELETE = _forward

    try:
        with serve_on_loopback(Handler) as url:
            proxy.url = f"{url}/v1"
            yield proxy
    finally:
        client.close()
