"""The application factory: ``create_app(settings)`` builds the FastAPI app for downstream
notifiers over the run directories and the outbox that ``settings`` name."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request, status
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from configs.settings import ApiToken, Settings, api_tokens
from serving.api.routes import router
from serving.api.runs import RunStore
from serving.outbox import open_engine
from serving.publish import RunDamaged

DESCRIPTION = """\
Risk forecasts of Forewarn for downstream notifiers: ranked risk windows, hourly risk per
area, run manifests, advisories (never with contact details), open outages with restoration
estimates; customer feedback and acknowledgements back.

* **Auth**: `Authorization: Bearer <token>`; tokens from `FOREWARN_API_TOKENS`
  (`name:token:read+write,...`). GET needs `read`, POST needs `write`. `/health` is open.
* **Versions**: `info.version` is the API version; every body carries `schema_version`, the
  output-contract version of the run files it was read from.
* **Caching**: reads carry a strong `ETag` (run file checksums + the query); send it back in
  `If-None-Match` to get `304 Not Modified`.
* **Paging**: `limit` and `offset`; pages report `total` and `next_offset`.
* **Errors**: a body that is not JSON is `400`; invalid parameters or fields `422` (the
  errors name the field, never echo the value); a body above the size limit `413`; a run
  whose files no longer match the checksums in its `run.json` `503` (nothing is served from it).
"""

class BodyLimit:
    """Refuse request bodies above ``max_bytes`` with 413 before they are read into memory:
    by ``Content-Length`` when given, and by counting when the body is chunked."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._refuse(send)
            return
        seen = 0

        async def counted() -> Message:
            # raised inside the route while FastAPI reads the body; its exception handling
            # turns an HTTPException into the 413 answer
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, detail=self._detail)
            return message

        await self.app(scope, counted, send)

    @property
    def _detail(self) -> str:
        return f"request body above {self.max_bytes} bytes"

    async def _refuse(self, send: Send) -> None:
        body = JSONResponse({"detail": self._detail},
                            status_code=status.HTTP_413_CONTENT_TOO_LARGE).body
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def _validation_problem(request: Request, exc: Exception) -> JSONResponse:
    """400 when the body is not JSON (as the OpenAPI document says), else 422; either way the
    errors name the field and the rule but never echo the submitted value back."""
    errors: list[dict[str, Any]] = []
    for err in exc.errors() if isinstance(exc, RequestValidationError) else ():
        if tuple(err.get("loc") or ()) == ("body",) and isinstance(err.get("input"), bytes):
            # FastAPI hands the raw bytes on when the Content-Type is not JSON: not JSON, 400
            err = {"type": "json_invalid", "loc": ("body",),
                   "msg": "the body is not JSON: send it with Content-Type: application/json"}
        errors.append({k: err[k] for k in ("type", "loc", "msg") if k in err})
    code = (status.HTTP_400_BAD_REQUEST if any(e.get("type") == "json_invalid" for e in errors)
            else status.HTTP_422_UNPROCESSABLE_CONTENT)
    return JSONResponse({"detail": jsonable_encoder(errors)}, status_code=code)


def _damaged_problem(request: Request, exc: Exception) -> JSONResponse:
    """503 naming the run and the file, never the server's path."""
    detail = exc.public_message if isinstance(exc, RunDamaged) else "run damaged"
    return JSONResponse({"detail": detail}, status_code=status.HTTP_503_SERVICE_UNAVAILABLE)


def create_app(
    settings: Settings,
    *,
    tokens: Sequence[ApiToken] | None = None,
    runs_dir: Path | None = None,
) -> FastAPI:
    """The API app. ``tokens`` default to FOREWARN_API_TOKENS; ``runs_dir`` to
    ``<home>/runs``. The outbox database (and its feedback table) is ``paths.outbox_url``."""
    engine = open_engine(settings.paths.outbox_url)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            engine.dispose()

    app = FastAPI(
        title="Forewarn API",
        version=settings.api.version,
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.tokens = tuple(api_tokens() if tokens is None else tokens)
    app.state.store = RunStore(runs_dir or settings.paths.runs_dir)
    app.state.engine = engine
    app.include_router(router)
    app.add_exception_handler(RequestValidationError, _validation_problem)
    app.add_exception_handler(RunDamaged, _damaged_problem)
    app.add_middleware(BodyLimit, max_bytes=settings.api.max_body_bytes)
    return app
