"""A tiny OpenAI-compatible loopback server whose quirks a test chooses.

It plays servers serve-sim does not: one that ignores ``temperature`` (greedy: the
same reply every time), ignores ``n`` (one choice whatever is asked), never returns
logprobs, reports absurd ``usage`` numbers, or wants a key. Every request body is
recorded. Replies are ratings drawn from a seeded generator (plus a few words, so
that two samples of a sampling server differ).
"""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from _loopback import QuietHandler, serve_on_loopback

WORDS = ("because", "loyalty", "fairness", "matters", "somewhat", "greatly", "to", "me", "here")


@dataclass
class Script:
    """What the server does (defaults: a well-behaved sampling server)."""

    models: tuple[str, ...] = ("scripted",)
    key: str | None = None
    greedy: bool = False
    ignore_n: bool = False
    logprobs: bool = True
    usage: dict[str, Any] | None = None
    seed: int = 0


@dataclass
class Scripted:
    """A running server: its ``url`` (ending in ``/v1``) and the request bodies it got."""

    url: str
    bodies: list[dict[str, Any]] = field(default_factory=list)

    @property
    def chat_requests(self) -> int:
        return len(self.bodies)


def _reply_text(rng: random.Random, greedy: bool) -> str:
    if greedy:
        return "3 because fairness matters to me"
    words = " ".join(rng.choice(WORDS) for _ in range(5))
    return f"{rng.randint(0, 5)} {words}"


@contextmanager
def scripted_server(script: Script) -> Iterator[Scripted]:
    """Serve ``script`` on a free loopback port for the ``with`` block."""
    rng = random.Random(script.seed)
    lock = threading.Lock()
    server_state = Scripted(url="")

    class Handler(QuietHandler):
        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _authorised(self) -> bool:
            if script.key is None:
                return True
            if self.headers.get("Authorization") == f"Bearer {script.key}":
                return True
            self._send(401, {"error": {"message": "Incorrect API key provided"}})
            return False

        def do_GET(self) -> None:
            if not self._authorised():
                return
            if self.path.rstrip("/").endswith("/models"):
                data = [{"id": m, "object": "model"} for m in script.models]
                self._send(200, {"object": "list", "data": data})
            else:
                self._send(404, {"error": {"message": "not found"}})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            with lock:
                server_state.bodies.append(body)
            if not self._authorised():
                return
            if body.get("model") not in script.models:
                message = f"The model `{body.get('model')}` does not exist"
                self._send(404, {"error": {"message": message, "code": "model_not_found"}})
                return
            n = 1 if script.ignore_n else int(body.get("n") or 1)
            choices = []
            with lock:
                for index in range(n):
                    text = _reply_text(rng, script.greedy)
                    if int(body.get("max_tokens") or 16) == 1:
                        text = text.split()[0]
                    choice: dict[str, Any] = {
                        "index": index,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                    }
                    if body.get("logprobs") and script.logprobs:
                        top = [{"token": str(v), "logprob": -1.8} for v in range(6)]
                        choice["logprobs"] = {
                            "content": [{"token": "3", "logprob": -1.8, "top_logprobs": top}]
                        }
                    choices.append(choice)
            usage = script.usage or {"prompt_tokens": 40, "completion_tokens": n}
            self._send(
                200, {"id": "x", "object": "chat.completion", "choices": choices, "usage": usage}
            )

    with serve_on_loopback(Handler) as url:
        server_state.url = f"{url}/v1"
        yield server_state
