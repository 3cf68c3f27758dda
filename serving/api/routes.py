"""The routes: each reads its inputs through a dependency, calls one function of
serving.api.runs, serving.feedback_store or serving.dispatch, and returns a response model."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response, status
from pydantic import ValidationError
from sqlalchemy import Engine, select, text
from sqlalchemy.exc import SQLAlchemyError

from serving import publish
from serving.api import deps
from serving.api.deps import PagingDep, Reader, RunDep, Writer
from serving.api.models import (
    RUN_ID_PATTERN,
    AcknowledgementIn,
    AcknowledgementOut,
    AdvisoryPage,
    AreaRisk,
    FeedbackIn,
    FeedbackOut,
    Health,
    IsoTime,
    OpenOutagePage,
    Problem,
    RiskWindowPage,
    RunManifest,
)
from serving.api.runs import (
    Run,
    RunFileMissing,
    RunNotFound,
    filter_advisories,
    filter_windows,
    page_of,
    records,
)
from serving.dispatch import acknowledge
from serving.feedback_store import FeedbackConflict, record_feedback
from serving.outbox import ensure_schema, outbox

_AUTH: dict[int | str, dict[str, Any]] = {401: {"model": Problem, "description": "missing or invalid bearer token"},
         403: {"model": Problem, "description": "the token lacks the scope"},
         422: {"model": Problem, "description": "invalid parameters"}}
_WRITE: dict[int | str, dict[str, Any]] = _AUTH | {
    400: {"model": Problem, "description": "the body is not JSON"},
    413: {"model": Problem, "description": "the body is above api.max_body_bytes"}}
_READ: dict[int | str, dict[str, Any]] = _AUTH | {304: {"description": "not modified (If-None-Match matched the ETag)"},
                 404: {"model": Problem, "description": "no such run (or none published)"},
                 503: {"model": Problem, "description": "the run's files no longer match the "
                       "checksums in its run.json; nothing is served from it"}}

AreaFilter = Annotated[str | None, Query(min_length=1, max_length=64, description="area id")]

router = APIRouter()


def _missing(exc: LookupError) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc))


@router.get("/health", response_model=Health, tags=["health"],
            responses={503: {"model": Health, "description": "runs folder or outbox unreachable, "
                                "or the latest run damaged"}})
def health(request: Request, response: Response) -> Health:
    """Liveness and readiness, without auth: the runs folder is readable and the outbox
    database answers."""
    store = deps.store(request)
    runs_ok = store.runs_dir.is_dir()
    try:
        with deps.engine(request).connect() as conn:
            conn.execute(text("SELECT 1"))
        outbox_ok = True
    except (SQLAlchemyError, OSError):  # not reachable: reported as degraded, not raised
        outbox_ok = False
    ids = store.run_ids() if runs_ok else []
    latest_ok: bool | None = None
    if ids:
        try:  # checksums are checked once per file version, so this stays cheap
            store.verify(store.get(ids[-1]))
            latest_ok = True
        except (publish.RunDamaged, RunNotFound, OSError):  # RunNotFound: removed meanwhile
            latest_ok = False
    ok = runs_ok and outbox_ok and latest_ok is not False
    if not ok:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return Health(status="ok" if ok else "degraded", schema_version=publish.SCHEMA_VERSION,
                  api_version=request.app.state.settings.api.version, runs_dir=runs_ok,
                  outbox=outbox_ok, latest_run_id=ids[-1] if ids else None,
                  latest_run_intact=latest_ok)


@router.get("/v1/risk-windows", response_model=RiskWindowPage, responses=_READ, tags=["risk"])
def risk_windows(
    request: Request, response: Response, _: Reader, run: RunDep, paging: PagingDep,
    min_probability: Annotated[float | None, Query(
        ge=0, le=1, description="keep windows whose peak probability is at least this (0-1)")] = None,
    area_id: AreaFilter = None,
    time_from: Annotated[IsoTime | None, Query(
        alias="from", description="keep windows ending after this time (ISO-8601 with zone)")] = None,
    time_to: Annotated[IsoTime | None, Query(
        alias="to", description="keep windows starting before this time (ISO-8601 with zone)")] = None,
) -> Any:
    """Ranked risk windows of a run (the latest by default), filtered and paged. ``from``
    after ``to`` is an empty range: an empty page, not an error (the OpenAPI document cannot
    state a rule between two parameters, so a schema-valid request is never refused)."""
    if (cached := deps.not_modified(request, response, run)) is not None:
        return cached
    frame = filter_windows(deps.store(request).windows(run), min_probability=min_probability,
                           area_id=area_id, time_from=time_from, time_to=time_to)
    items, following = page_of(records(frame), paging.limit, paging.offset)
    return RiskWindowPage.model_validate(dict(schema_version=run.schema_version, run_id=run.run_id, as_of=run.as_of,
                          total=len(frame), limit=paging.limit, offset=paging.offset,
                          next_offset=following, items=items))


@router.get("/v1/areas/{area_id}/risk", response_model=AreaRisk, responses=_READ, tags=["risk"])
def area_risk(
    request: Request, response: Response, _: Reader, run: RunDep,
    area_id: Annotated[str, Path(min_length=1, max_length=64)],
) -> Any:
    """Hourly risk of one area over the run's horizon (the latest run by default)."""
    if (cached := deps.not_modified(request, response, run)) is not None:
        return cached
    store = deps.store(request)
    hourly = store.hourly(run)
    rows = hourly[hourly["area_id"].astype(str) == area_id].sort_values("ts")
    if rows.empty:
        raise HTTPException(status.HTTP_404_NOT_FOUND,
                            detail=f"area {area_id!r} is not in run {run.run_id} "
                            f"({hourly['area_id'].nunique()} areas are)")
    version = rows["model_version"].iloc[0] if "model_version" in rows else None
    return AreaRisk.model_validate(dict(schema_version=run.schema_version, run_id=run.run_id, as_of=run.as_of,
                    area_id=area_id, area_name=store.area_name(run, area_id),
                    model_version=None if version is None else str(version), items=records(rows)))


def _manifest(run: Run) -> RunManifest:
    m = run.manifest
    base = f"/v1/runs/{run.run_id}"
    links = {"self": base, "risk_windows": f"/v1/risk-windows?run_id={run.run_id}",
             "advisories": f"/v1/advisories?run_id={run.run_id}",
             "open_outages": f"/v1/outages/open?run_id={run.run_id}"}
    try:
        inputs = [{"name": str(i.get("path", "")).rsplit("/", 1)[-1], "bytes": i.get("bytes", 0),
                   "sha256": i.get("sha256", "")} for i in m.get("inputs") or []]
        advisories = {k: v for k, v in (m.get("advisories") or {}).items() if isinstance(v, int)}
        return RunManifest.model_validate(m | {"schema_version": run.schema_version,
                                               "inputs": inputs, "advisories": advisories,
                                               "links": links})
    except (AttributeError, TypeError, ValidationError) as exc:  # a hand-edited run.json
        fields = sorted({str(e["loc"][0]) for e in exc.errors() if e["loc"]}
                        if isinstance(exc, ValidationError) else {"inputs or advisories"})
        raise publish.RunDamaged(run.directory, publish.MANIFEST_JSON,
                                 f"not a valid run manifest ({', '.join(fields)})") from exc


@router.get("/v1/runs/latest", response_model=RunManifest, responses=_READ, tags=["runs"])
def latest_run(request: Request, response: Response, _: Reader) -> Any:
    """The manifest of the latest published run (greatest run id: newest as-of time)."""
    try:
        run = deps.store(request).latest()
    except RunNotFound as exc:
        raise _missing(exc) from exc
    deps.store(request).verify(run)
    return deps.not_modified(request, response, run) or _manifest(run)


@router.get("/v1/runs/{run_id}", response_model=RunManifest, responses=_READ, tags=["runs"])
def run_manifest(
    request: Request, response: Response, _: Reader,
    run_id: Annotated[str, Path(pattern=RUN_ID_PATTERN, max_length=128)],
) -> Any:
    """The manifest of one run: inputs with checksums, model, contracts, output checksums."""
    try:
        run = deps.store(request).get(run_id)
    except RunNotFound as exc:
        raise _missing(exc) from exc
    deps.store(request).verify(run)
    return deps.not_modified(request, response, run) or _manifest(run)


@router.get("/v1/runs/{run_path:path}", include_in_schema=False)
def run_path_rejected(_: Reader, run_path: str) -> None:
    """A run id with a slash (e.g. ``..%2F..%2Fetc``) is never a run: 422, not a file lookup."""
    raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                        detail="a run id has no '/' and does not start with '.'; "
                        "see GET /v1/runs/latest for the form")


@router.get("/v1/advisories", response_model=AdvisoryPage, responses=_READ, tags=["advisories"])
def advisories(
    request: Request, response: Response, _: Reader, run: RunDep, paging: PagingDep,
    area_id: AreaFilter = None,
    segment: Annotated[str | None, Query(
        max_length=32, description="residential, commercial, industrial or critical")] = None,
    kind: Annotated[str | None, Query(max_length=64, description="e.g. risk_advisory")] = None,
    window_id: Annotated[str | None, Query(max_length=64)] = None,
) -> Any:
    """Advisories decided in a run, without any contact detail, filtered and paged."""
    if (cached := deps.not_modified(request, response, run)) is not None:
        return cached
    try:
        rows = deps.store(request).advisories(run)
    except RunFileMissing as exc:
        raise _missing(exc) from exc
    found = filter_advisories(rows, area_id=area_id, segment=segment, kind=kind,
                              window_id=window_id)
    items, following = page_of(found, paging.limit, paging.offset)
    return AdvisoryPage.model_validate(dict(schema_version=run.schema_version, run_id=run.run_id, as_of=run.as_of,
                        total=len(found), limit=paging.limit, offset=paging.offset,
                        next_offset=following, items=items))


@router.get("/v1/outages/open", response_model=OpenOutagePage, responses=_READ,
            tags=["outages"])
def open_outages(
    request: Request, response: Response, _: Reader, run: RunDep, paging: PagingDep,
    area_id: AreaFilter = None,
) -> Any:
    """Outages on the map at the run's as-of time with P10/P50/P90 restoration estimates,
    most customers first; 404 when the run has no restoration estimates."""
    if (cached := deps.not_modified(request, response, run)) is not None:
        return cached
    try:
        frame = deps.store(request).outages(run)
    except RunFileMissing as exc:
        raise _missing(exc) from exc
    if area_id is not None:
        frame = frame[frame["area_id"].astype(str) == area_id]
    frame = frame.sort_values(["customers", "event_id"], ascending=[False, True])
    items, following = page_of(records(frame), paging.limit, paging.offset)
    return OpenOutagePage.model_validate(dict(schema_version=run.schema_version, run_id=run.run_id, as_of=run.as_of,
                          total=len(frame), limit=paging.limit, offset=paging.offset,
                          next_offset=following, items=items))


@router.post("/v1/feedback", response_model=FeedbackOut, status_code=status.HTTP_201_CREATED,
             tags=["feedback"],
             responses=_WRITE | {200: {"model": FeedbackOut,
                                      "description": "already stored (same feedback_id)"},
                                409: {"model": Problem,
                                      "description": "feedback_id used for other feedback"}})
def feedback(request: Request, response: Response, principal: Writer, body: FeedbackIn) -> Any:
    """Store customer feedback on an advisory; idempotent on ``feedback_id`` (201 when new,
    200 when the same feedback was already stored)."""
    engine = deps.engine(request)
    customer_id = body.customer_id
    if customer_id is None and body.advisory_id is not None:
        customer_id = _customer_of(engine, body.advisory_id)
    try:
        stored = record_feedback(engine, feedback_id=body.feedback_id, kind=body.kind,
                                 advisory_id=body.advisory_id, customer_id=customer_id,
                                 text=body.text, source=principal.name)
    except FeedbackConflict as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=str(exc)) from exc
    if not stored.created:
        response.status_code = status.HTTP_200_OK
    return FeedbackOut(schema_version=publish.SCHEMA_VERSION, feedback_id=stored.feedback_id,
                       advisory_id=stored.advisory_id, customer_id=stored.customer_id,
                       kind=stored.kind, text=stored.text, received_at=stored.received_at,
                       created=stored.created)


def _customer_of(engine: Engine, advisory_id: str) -> str | None:
    """The customer of an advisory from its outbox row (None when it is not in the outbox)."""
    with engine.begin() as conn:
        ensure_schema(conn)
        found = conn.execute(select(outbox.c.customer_id)
                             .where(outbox.c.idempotency_key == advisory_id)).scalar_one_or_none()
    return None if found is None else str(found)


@router.post("/v1/acknowledgements", response_model=AcknowledgementOut, tags=["feedback"],
             responses=_WRITE | {404: {"model": Problem,
                                      "description": "no advisory with this key in the outbox"}})
def acknowledgement(request: Request, _: Writer, body: AcknowledgementIn) -> AcknowledgementOut:
    """The customer acknowledged an advisory: critical customers are escalated no further.
    Idempotent: a repeat keeps the first acknowledgement time."""
    url = deps.settings(request).paths.outbox_url
    if not acknowledge(url, body.advisory_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND,
                            detail=f"no advisory with idempotency key {body.advisory_id!r} "
                            "in the outbox")
    with deps.engine(request).connect() as conn:
        at: datetime = conn.execute(select(outbox.c.acknowledged_at)
                          .where(outbox.c.idempotency_key == body.advisory_id)).scalar_one()
    if at.tzinfo is None:  # SQLite keeps no zone; the column is UTC
        at = at.replace(tzinfo=UTC)
    return AcknowledgementOut(schema_version=publish.SCHEMA_VERSION, advisory_id=body.advisory_id,
                              acknowledged_at=at)
