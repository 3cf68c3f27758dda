"""Dependencies of the routes: bearer-token auth with scopes, the run a request reads, paging,
and ETag handling. Everything comes from ``app.state`` (set by ``create_app``), nothing from
the environment at import time.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Query, Request, Response, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine

from configs.settings import ApiSettings, ApiToken, Settings
from serving.api.models import RUN_ID_PATTERN
from serving.api.runs import Run, RunNotFound, RunStore

LIMIT_CAP = 1000  # largest page size the schema admits; api.max_limit may be lower
OFFSET_CAP = 1_000_000_000

bearer = HTTPBearer(
    auto_error=False,
    description="`Authorization: Bearer <token>`; tokens and their scopes (read, write) come "
    "from FOREWARN_API_TOKENS",
)


@dataclass(frozen=True)
class Principal:
    """Who called: the token's name (safe to log) and its scopes."""

    name: str
    scopes: frozenset[str]


def settings(request: Request) -> Settings:
    return request.app.state.settings


def api_settings(request: Request) -> ApiSettings:
    return request.app.state.settings.api


def store(request: Request) -> RunStore:
    return request.app.state.store


def engine(request: Request) -> Engine:
    return request.app.state.engine


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


def _match(tokens: tuple[ApiToken, ...], presented: str) -> ApiToken | None:
    """The token equal to ``presented``, comparing digests in constant time and always
    against every token, so timing tells nothing about which or how much matched."""
    wanted = _digest(presented)
    found: ApiToken | None = None
    for token in tokens:
        if hmac.compare_digest(wanted, _digest(token.token.get_secret_value())):
            found = token
    return found


def _unauthorized(detail: str, error: str | None = None) -> HTTPException:
    challenge = 'Bearer realm="forewarn"' + (f', error="{error}"' if error else "")
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail=detail,
                         headers={"WWW-Authenticate": challenge})


def authenticate(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    """The caller of a bearer token, or 401 (with ``WWW-Authenticate: Bearer``)."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise _unauthorized("missing bearer token: send 'Authorization: Bearer <token>'")
    token = _match(request.app.state.tokens, credentials.credentials)
    if token is None:
        raise _unauthorized("invalid bearer token", "invalid_token")
    return Principal(name=token.name, scopes=frozenset(token.scopes))


def _require(scope: str) -> Callable[[Principal], Principal]:
    """A dependency that lets only callers whose token has ``scope`` through (else 403)."""

    def check(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
        if scope not in principal.scopes:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                detail=f"token {principal.name!r} lacks the {scope!r} scope",
                headers={"WWW-Authenticate": f'Bearer realm="forewarn", '
                         f'error="insufficient_scope", scope="{scope}"'},
            )
        return principal
    return check


Reader = Annotated[Principal, Depends(_require("read"))]
Writer = Annotated[Principal, Depends(_require("write"))]


def run_for(
    request: Request,
    run_id: Annotated[str | None, Query(
        pattern=RUN_ID_PATTERN, max_length=128,
        description="a past run by id; default the latest published run")] = None,
) -> Run:
    """The run a read serves, or 404 with the reason; publish.RunDamaged (503) when any of
    its files differs from run.json, not only those the route reads (nothing is served)."""
    try:
        run = store(request).resolve(run_id)
    except RunNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc)) from exc
    store(request).verify(run)
    return run


RunDep = Annotated[Run, Depends(run_for)]


@dataclass(frozen=True)
class Paging:
    limit: int
    offset: int


def paging(
    request: Request,
    limit: Annotated[int | None, Query(ge=1, le=LIMIT_CAP, description=(
        "page size; default api.default_limit; above api.max_limit the page is cut to it "
        "(the body's `limit` says the size used)"))] = None,
    offset: Annotated[int, Query(ge=0, le=OFFSET_CAP, description="rows to skip")] = 0,
) -> Paging:
    cfg = api_settings(request)
    size = cfg.default_limit if limit is None else limit
    return Paging(limit=min(size, cfg.max_limit), offset=offset)


PagingDep = Annotated[Paging, Depends(paging)]


# ------------------------------------------------------------------------------ ETags


def etag_for(request: Request, run: Run) -> str:
    """Strong ETag of a read: the run's output checksums (run.json), the API version, the path
    and the query. The same files and the same question give the same tag."""
    key = json.dumps({
        "api": request.app.state.settings.api.version,
        "run": run.run_id,
        "outputs": sorted(run.outputs.items()),
        "path": request.url.path,
        "query": sorted(request.query_params.multi_items()),
    }, sort_keys=True, ensure_ascii=False)
    return '"' + hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:40] + '"'


def _matches(header: str, tag: str) -> bool:
    """``If-None-Match`` comparison (weak, as RFC 9110 asks for GET)."""
    for candidate in header.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == tag:
            return True
    return False


def not_modified(request: Request, response: Response, run: Run) -> Response | None:
    """Set ``ETag`` on the response; a 304 response when the client's copy is current."""
    tag = etag_for(request, run)
    headers = {"ETag": tag, "Cache-Control": "no-cache"}
    response.headers.update(headers)
    header = request.headers.get("if-none-match")
    if header is not None and _matches(header, tag):
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    return None
