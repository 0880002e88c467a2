"""``pcollapse serve-sim``: the simulator behind an OpenAI-compatible HTTP server.

:func:`create_app` builds the FastAPI application (see :mod:`persona_collapse.serve.app`
for the endpoints, logprobs, usage and fault injection); :func:`run_server`
serves it with uvicorn until interrupted; :func:`serve_in_thread` runs it in a
background thread on a free port (notebooks, small tests);
:func:`serve_in_process` runs it in a child process, so that server and client
use separate cores (benchmarks, full-size tests).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from persona_collapse.core.errors import ConfigError, MissingDependencyError
from persona_collapse.serve.app import (
    FaultSettings,
    ServerStats,
    SimServerSettings,
    SimService,
    settings_from_options,
)
from persona_collapse.serve.fine_tuning import FineTuningSettings

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
"""serve-sim binds to loopback unless told otherwise."""

DEFAULT_PORT = 8000


def is_loopback(host: str) -> bool:
    """Whether ``host`` names a loopback address (``localhost`` included)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def create_app(
    settings: SimServerSettings | None = None, *, service: SimService | None = None
) -> Any:
    """The FastAPI application serving ``settings`` (or an existing ``service``).

    Raises:
        MissingDependencyError: fastapi is not installed.
    """
    try:
        from persona_collapse.serve.asgi import create_app as build
    except ImportError as exc:
        if exc.name is not None and exc.name.split(".")[0] in ("fastapi", "starlette"):
            raise MissingDependencyError("fastapi", "serve") from None
        raise
    return build(settings, service=service)


def _uvicorn() -> Any:
    try:
        import uvicorn
    except ImportError:
        raise MissingDependencyError("uvicorn", "serve") from None
    return uvicorn


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (``port`` 0: a free port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY only on sockets that say they are
    # TCP, and without it every response waits ~40 ms for a delayed ACK (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"serve-sim: cannot listen on {host}:{port} ({exc.strerror or exc})"
        ) from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def base_url(host: str, port: int) -> str:
    """The ``/v1`` base URL clients use for a server on ``host:port``."""
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/v1"


def _uvicorn_server(service: SimService, *, log_level: str) -> Any:
    uvicorn = _uvicorn()
    config = uvicorn.Config(
        create_app(service=service),
        log_level=log_level,
        access_log=False,
        lifespan="off",
        # Many clients in flight is the point of the exercise.
        backlog=2048,
        timeout_keep_alive=30,
    )
    return uvicorn.Server(config)


def run_server(
    settings: SimServerSettings | None = None,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    log_level: str = "warning",
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve the simulator until interrupted (Ctrl-C / SIGTERM).

    Args:
        settings: What to serve.
        host: Address to bind; loopback by default. Others expose the server to the
            network (a warning is logged).
        port: TCP port; 0 picks a free one.
        log_level: uvicorn's log level.
        on_ready: Called with the base URL once the server listens.

    Raises:
        ConfigError: The address cannot be bound, or invalid settings.
        MissingDependencyError: fastapi or uvicorn is not installed.
    """
    service = SimService(settings or SimServerSettings())
    if not is_loopback(host):
        logger.warning("serve-sim listens on %s: it is reachable from other machines", host)
    sock = _bind(host, port)
    bound_port = int(sock.getsockname()[1])
    server = _uvicorn_server(service, log_level=log_level)
    url = base_url(host, bound_port)

    import asyncio

    async def main() -> None:
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started and not task.done():
            await asyncio.sleep(0.01)
        if server.started and on_ready is not None:
            on_ready(url)
        await task

    try:
        asyncio.run(main())
    finally:
        sock.close()


@dataclass
class RunningServer:
    """A server started by :func:`serve_in_thread`.

    Attributes:
        url: Base URL for clients (``http://127.0.0.1:<port>/v1``).
        port: The bound port.
        service: The server's state; ``service.stats`` counts requests.
    """

    url: str
    port: int
    service: SimService

    @property
    def stats(self) -> ServerStats:
        """Request counters of the server."""
        return self.service.stats


@contextmanager
def serve_in_thread(
    settings: SimServerSettings | None = None,
    *,
    host: str = DEFAULT_HOST,
    port: int = 0,
    startup_timeout: float = 30.0,
) -> Iterator[RunningServer]:
    """Run serve-sim in a background thread for the duration of a ``with`` block.

    Args:
        settings: What to serve.
        host: Address to bind (loopback by default).
        port: TCP port; 0 (default) picks a free one.
        startup_timeout: Seconds to wait for the server to listen.

    Yields:
        The :class:`RunningServer` (URL, port, live counters).

    Raises:
        ConfigError: The address cannot be bound.
        RuntimeError: The server did not start in time.
    """
    service = SimService(settings or SimServerSettings())
    sock = _bind(host, port)
    bound_port = int(sock.getsockname()[1])
    server = _uvicorn_server(service, log_level="warning")
    failure: list[BaseException] = []

    def target() -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as exc:  # reported to the caller below
            failure.append(exc)

    thread = threading.Thread(target=target, name=f"serve-sim:{bound_port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if failure or not thread.is_alive():
            sock.close()
            raise RuntimeError(f"serve-sim failed to start: {failure[0] if failure else 'exited'}")
        if time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise RuntimeError(f"serve-sim did not start within {startup_timeout:g} s")
        time.sleep(0.005)
    try:
        yield RunningServer(base_url(host, bound_port), bound_port, service)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


_CHILD = """
import sys
from persona_collapse.serve import SimServerSettings, run_server
settings = SimServerSettings.model_validate_json(sys.argv[1])
run_server(settings, host=sys.argv[2], port=0, on_ready=lambda url: print(url, flush=True))
"""


@dataclass
class ServerProcess:
    """A server started by :func:`serve_in_process`.

    Attributes:
        url: Base URL for clients.
        process: The child process.
    """

    url: str
    process: subprocess.Popen[str]

    def stats(self) -> dict[str, Any]:
        """The server's request counters (``GET /stats``)."""
        with urllib.request.urlopen(self.url.removesuffix("/v1") + "/stats", timeout=30) as reply:
            data: dict[str, Any] = json.load(reply)
        return data

    def reset_stats(self) -> None:
        """Zero the server's counters (``POST /stats/reset``)."""
        request = urllib.request.Request(
            self.url.removesuffix("/v1") + "/stats/reset", data=b"", method="POST"
        )
        with urllib.request.urlopen(request, timeout=30):
            pass


@contextmanager
def serve_in_process(
    settings: SimServerSettings | None = None,
    *,
    host: str = DEFAULT_HOST,
    startup_timeout: float = 60.0,
) -> Iterator[ServerProcess]:
    """Run serve-sim in a child process on a free port for the duration of a ``with`` block.

    Raises:
        RuntimeError: The server did not start.
    """
    payload = (settings or SimServerSettings()).model_dump_json()
    env = dict(os.environ)
    # The child imports this very package, wherever it was imported from.
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    # stderr goes to a file, not a pipe: a pipe nobody reads fills up and blocks the server.
    with tempfile.TemporaryFile(mode="w+") as errors:
        proc = subprocess.Popen(
            [sys.executable, "-c", _CHILD, payload, host],
            env=env,
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
        )
        try:
            yield ServerProcess(_read_url(proc, errors, startup_timeout), proc)
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
            if proc.stdout is not None:
                proc.stdout.close()


def _read_url(proc: subprocess.Popen[str], errors: Any, timeout: float) -> str:
    """The URL the child prints when it listens; RuntimeError if it does not."""
    ready: list[str] = []
    stdout = proc.stdout
    if stdout is not None:
        reader = threading.Thread(target=lambda: ready.append(stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout)
    url = ready[0].strip() if ready else ""
    if not url.startswith("http"):
        proc.kill()
        proc.wait(timeout=10)
        errors.seek(0)
        detail = errors.read().strip()[-500:] or "no output"
        raise RuntimeError(f"serve-sim did not start: {detail}")
    return url


__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "FaultSettings",
    "FineTuningSettings",
    "RunningServer",
    "ServerProcess",
    "ServerStats",
    "SimServerSettings",
    "SimService",
    "base_url",
    "create_app",
    "is_loopback",
    "run_server",
    "serve_in_process",
    "serve_in_thread",
    "settings_from_options",
]
