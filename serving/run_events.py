"""Tell subscribed downstream systems that a run was published: a signed CloudEvents webhook.

Each subscriber (``api.subscribers`` in the profile) gets one HTTP POST of a CloudEvents 1.0
event in structured mode (``Content-Type: application/cloudevents+json``)::

    {"specversion": "1.0", "id": "<run_id>.published", "source": "<api.event_source>",
     "type": "org.forewarn.run.published", "subject": "<run_id>", "time": "<UTC>",
     "datacontenttype": "application/json", "dataschema": ".../v1/runs/{run_id}",
     "data": {"run_id", "as_of", "schema_version", "model_version", "counts": {...},
              "links": {...}}}

Signed as the advisory webhook is: ``X-Forewarn-Signature: sha256=<hex>`` with the hex
HMAC-SHA256, keyed by the subscriber's secret (from the environment variable its
``secret_env`` names), of ``X-Forewarn-Timestamp`` (Unix seconds) + "." + the exact body.
The event id is the same for every delivery of the same run (``Idempotency-Key`` too), so a
receiver dedupes the retries and a repeated notification of the same run.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from configs.settings import ApiSettings, Settings, SubscriberSettings, subscriber_secret
from serving import publish
from serving.channels import http
from serving.channels.base import PermanentSendError, SendError, scrub
from serving.channels.webhook import signature

log = logging.getLogger(__name__)

EVENT_TYPE = "org.forewarn.run.published"
CONTENT_TYPE = "application/cloudevents+json; charset=utf-8"
SIGNATURE_HEADER = "X-Forewarn-Signature"
TIMESTAMP_HEADER = "X-Forewarn-Timestamp"


@dataclass(frozen=True)
class Delivery:
    """Outcome for one subscriber: ``sent``, ``failed`` or ``skipped`` (no secret set)."""

    subscriber: str
    outcome: str
    status: int | None = None
    attempts: int = 0
    error: str | None = None


def run_published_event(run_dir: Path, cfg: ApiSettings, now: datetime | None = None
                        ) -> dict[str, Any]:
    """The CloudEvent for the finished run in ``run_dir`` (its run.json must exist)."""
    manifest = json.loads((run_dir / publish.MANIFEST_JSON).read_text(encoding="utf-8"))
    run_id = str(manifest["run_id"])
    base = cfg.base_url.rstrip("/")
    advisories = manifest.get("advisories") or {}
    restoration = manifest.get("restoration") or {}
    data = {
        "run_id": run_id,
        "as_of": manifest.get("as_of"),
        "created_utc": manifest.get("created_utc"),
        "schema_version": manifest.get("schema_version", publish.SCHEMA_VERSION),
        "model_version": (manifest.get("model") or {}).get("version"),
        "weather_source": manifest.get("weather_source"),
        "counts": {
            "risk_windows": manifest.get("windows"),
            "advisories": advisories.get("decided"),
            "advisories_enqueued": advisories.get("inserted"),
            "open_outages": restoration.get("open_outages_at_as_of"),
            "quarantined_rows": manifest.get("quarantined_rows"),
        },
        "outputs": manifest.get("outputs") or {},
        "links": {
            "run": f"{base}/v1/runs/{run_id}",
            "risk_windows": f"{base}/v1/risk-windows?run_id={run_id}",
            "advisories": f"{base}/v1/advisories?run_id={run_id}",
            "open_outages": f"{base}/v1/outages/open?run_id={run_id}",
        },
    }
    when = (now or datetime.now(UTC)).astimezone(UTC)
    return {
        "specversion": "1.0",
        "id": f"{run_id}.published",
        "source": cfg.event_source,
        "type": EVENT_TYPE,
        "subject": run_id,
        "time": when.isoformat().replace("+00:00", "Z"),
        "datacontenttype": "application/json",
        "dataschema": f"{base}/openapi.json#/components/schemas/RunManifest",
        "data": data,
    }


def notify_subscribers(
    run_dir: Path,
    settings: Settings,
    *,
    environ: dict[str, str] | None = None,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> list[Delivery]:
    """POST the run-published event to every subscriber; transient failures (timeouts,
    connection errors, 408/425/429, 5xx) are retried up to ``api.attempts`` times with a
    short backoff. A subscriber whose secret variable is unset is skipped (never sent
    unsigned). Returns one Delivery per subscriber; never raises for a subscriber's failure."""
    cfg = settings.api
    event = run_published_event(run_dir, cfg, datetime.fromtimestamp(clock(), UTC))
    body = json.dumps(event, ensure_ascii=False, separators=(",", ":"), sort_keys=True,
                      default=str).encode("utf-8")
    results = [_deliver(sub, body, event["id"], cfg, environ, clock, sleep)
               for sub in cfg.subscribers]
    for result in results:
        log.info("run %s: subscriber %s %s (status %s, %d attempts)", event["subject"],
                 result.subscriber, result.outcome, result.status, result.attempts)
    return results


def _deliver(sub: SubscriberSettings, body: bytes, event_id: str, cfg: ApiSettings,
             environ: dict[str, str] | None, clock: Callable[[], float],
             sleep: Callable[[float], None]) -> Delivery:
    name = sub.name or (urlsplit(sub.url).hostname or sub.url)
    secret = subscriber_secret(sub, environ)
    if secret is None:
        return Delivery(name, "skipped", error=f"{sub.secret_env} is not set")
    key = secret.get_secret_value().encode("utf-8")
    client = http.client(cfg.timeout_s)
    error: SendError | None = None
    try:
        for attempt in range(1, cfg.attempts + 1):
            timestamp = str(int(clock()))
            headers = {"Content-Type": CONTENT_TYPE, "Idempotency-Key": event_id,
                       TIMESTAMP_HEADER: timestamp,
                       SIGNATURE_HEADER: signature(key, timestamp, body)}
            try:
                response = http.post(client, sub.url, f"subscriber {name}", content=body,
                                     headers=headers)
                return Delivery(name, "sent", response.status_code, attempt)
            except PermanentSendError as exc:
                return Delivery(name, "failed", exc.status, attempt, scrub(str(exc)))
            except SendError as exc:
                error = exc
                if attempt < cfg.attempts:
                    sleep(min(2.0 ** (attempt - 1), 30.0))
    finally:
        client.close()
    assert error is not None
    return Delivery(name, "failed", error.status, cfg.attempts, scrub(str(error)))
