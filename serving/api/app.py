"""The application factory: ``create_app(settings)`` builds the FastAPI app for downstream
notifiers over the run directories and the outbox that ``settings`` name."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from configs.settings import ApiToken, Settings, api_tokens
from serving.api.routes import router
from serving.api.runs import RunStore
from serving.outbox import open_engine

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
"""


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
    return app
