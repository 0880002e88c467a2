"""The FastAPI application of ``serve-sim`` (see :mod:`persona_collapse.serve.app`).

No ``from __future__ import annotations`` here: FastAPI reads the handlers'
annotations at runtime to inject the request.
"""

import asyncio
import hmac
import json
import os
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.requests import ClientDisconnect

from persona_collapse.serve.app import SimServerSettings, SimService, error_body


def create_app(
    settings: SimServerSettings | None = None, *, service: SimService | None = None
) -> FastAPI:
    """Build the FastAPI application of ``serve-sim``.

    Args:
        settings: What to serve (default :class:`SimServerSettings`).
        service: An existing :class:`SimService` (its ``stats`` stay readable in-process).

    Raises:
        MissingDependencyError: fastapi is not installed.
        ConfigError: Invalid settings.
    """
    svc = service if service is not None else SimService(settings or SimServerSettings())
    cfg = svc.settings
    app = FastAPI(title="persona-collapse serve-sim", docs_url=None, redoc_url=None)
    app.state.service = svc

    async def client_gone(_request: Request, _exc: Exception) -> Response:
        # A client that disconnects mid-request (timeouts, Ctrl-C) is routine, not a server
        # error: no traceback; nobody reads the reply (499 as nginx logs it).
        return Response(status_code=499)

    app.add_exception_handler(ClientDisconnect, client_gone)

    def reply(
        status: int, body: Mapping[str, Any], headers: Mapping[str, str] | None = None
    ) -> Response:
        return Response(
            content=json.dumps(body, separators=(",", ":")),
            status_code=status,
            media_type="application/json",
            headers=dict(headers or {}),
        )

    def authorised(request: Request) -> tuple[bool, str]:
        if cfg.api_key_env is None:
            return True, ""
        expected = os.environ.get(cfg.api_key_env, "")
        given = request.headers.get("authorization", "")
        token = given[7:] if given.lower().startswith("bearer ") else given
        return bool(expected) and hmac.compare_digest(token, expected), token

    def unauthorised_reply(token: str) -> Response:
        shown = token if cfg.echo_key_in_errors else (token[:3] + "***" if token else "none")
        return reply(
            401,
            error_body(
                f"Incorrect API key provided: {shown}.",
                "invalid_request_error",
                code="invalid_api_key",
            ),
        )

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        stats = svc.stats
        stats.requests += 1
        ok, token = authorised(request)
        if not ok:
            stats.outcomes["401"] += 1
            return unauthorised_reply(token)
        fault = svc.draw_fault()
        if fault == "429":
            stats.outcomes["429"] += 1
            after = cfg.faults.retry_after
            return reply(
                429,
                error_body(
                    "Rate limit reached (simulated).", "requests", code="rate_limit_exceeded"
                ),
                {"retry-after": f"{after:g}", "retry-after-ms": f"{after * 1000:g}"},
            )
        if fault == "500":
            stats.outcomes["500"] += 1
            return reply(500, error_body("The server had an error (simulated).", "server_error"))
        try:
            body = await request.json()
        except ValueError:
            stats.outcomes["400"] += 1
            return reply(400, error_body("request body is not valid JSON", "invalid_request_error"))
        if not isinstance(body, dict):
            stats.outcomes["400"] += 1
            return reply(
                400, error_body("request body must be a JSON object", "invalid_request_error")
            )
        if fault == "slow":
            await asyncio.sleep(cfg.faults.slow_delay)
        status, payload = await svc.complete(body)
        if fault == "slow" and status == 200:
            # Counted apart: the client has usually given up by now.
            stats.outcomes["ok"] -= 1
            stats.outcomes["slow"] += 1
        if fault == "unparseable" and status == 200:
            stats.outcomes["ok"] -= 1
            stats.outcomes["unparseable"] += 1
            text = json.dumps(payload)
            return Response(
                content=text[: len(text) // 2], status_code=200, media_type="application/json"
            )
        return reply(status, payload)

    @app.get("/v1/models")
    async def models() -> Response:
        data = [
            {"id": name, "object": "model", "created": 0, "owned_by": "persona-collapse"}
            for name in svc.model_names
        ]
        return reply(200, {"object": "list", "data": data})

    # --- the simulated files and fine-tuning API (see persona_collapse.serve.fine_tuning) ---
    tuning = svc.fine_tuning

    def refused(request: Request) -> Response | None:
        ok, token = authorised(request)
        if ok:
            return None
        svc.stats.fine_tuning["401"] += 1
        return unauthorised_reply(token)

    def limit_of(request: Request) -> int:
        try:
            return max(1, min(int(request.query_params.get("limit", "20")), 100))
        except ValueError:
            return 20

    @app.post("/v1/files")
    async def upload_file(request: Request) -> Response:
        denied = refused(request)
        if denied is not None:
            return denied
        body = await request.body()
        return reply(*tuning.upload(request.headers.get("content-type", ""), body))

    @app.get("/v1/files/{file_id}")
    async def get_file(file_id: str, request: Request) -> Response:
        return refused(request) or reply(*tuning.get_file(file_id))

    @app.post("/v1/fine_tuning/jobs")
    async def create_job(request: Request) -> Response:
        denied = refused(request)
        if denied is not None:
            return denied
        try:
            body = await request.json()
        except ValueError:
            body = None
        return reply(*tuning.create_job(body))

    @app.get("/v1/fine_tuning/jobs")
    async def list_jobs(request: Request) -> Response:
        denied = refused(request)
        if denied is not None:
            return denied
        # The SDK sends metadata filters as ``metadata[key]=value``.
        metadata = {
            key[len("metadata[") : -1]: value
            for key, value in request.query_params.items()
            if key.startswith("metadata[") and key.endswith("]")
        }
        return reply(
            *tuning.list_jobs(
                limit=limit_of(request),
                after=request.query_params.get("after"),
                metadata=metadata,
            )
        )

    @app.get("/v1/fine_tuning/jobs/{job_id}")
    async def get_job(job_id: str, request: Request) -> Response:
        return refused(request) or reply(*tuning.get_job(job_id))

    @app.get("/v1/fine_tuning/jobs/{job_id}/events")
    async def job_events(job_id: str, request: Request) -> Response:
        return refused(request) or reply(
            *tuning.list_events(
                job_id, limit=limit_of(request), after=request.query_params.get("after")
            )
        )

    @app.get("/v1/fine_tuning/jobs/{job_id}/checkpoints")
    async def job_checkpoints(job_id: str, request: Request) -> Response:
        return refused(request) or reply(
            *tuning.list_checkpoints(
                job_id, limit=limit_of(request), after=request.query_params.get("after")
            )
        )

    @app.post("/v1/fine_tuning/jobs/{job_id}/cancel")
    async def cancel_job(job_id: str, request: Request) -> Response:
        return refused(request) or reply(*tuning.cancel(job_id))

    @app.get("/stats")
    async def stats() -> JSONResponse:
        return JSONResponse(svc.stats.to_dict())

    @app.post("/stats/reset")
    async def reset_stats() -> JSONResponse:
        svc.stats.reset()
        return JSONResponse(svc.stats.to_dict())

    return app


__all__ = ["create_app"]
