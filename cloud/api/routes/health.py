"""Liveness and readiness of the service."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from cloud.db import upkeep
from cloud.errors import Unauthorized
from cloud.ingest.status import ingest_status
from cloud.metrics import refresh_from_database

router = APIRouter(tags=["service"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process answers."""
    return {"status": "ok"}


async def _broker_reachable(url: str | None) -> bool:
    parts = urlsplit(url or "mqtt://127.0.0.1:1883")
    port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(parts.hostname or "127.0.0.1", port), timeout=2
        )
    except (OSError, TimeoutError):
        return False
    writer.close()
    await writer.wait_closed()
    return True


@router.get(
    "/readyz",
    responses={503: {"description": "Not ready: the database, the broker or ingest is not."}},
)
async def readyz(request: Request) -> JSONResponse:
    """Database and broker reachable, an ingest in this process subscribed, how far behind
    every ingest is (503 when not ready), and the jobs keeping the time series (`upkeep`:
    one failing is reported, but does not make the service unready)."""
    body: dict[str, Any] = {"database": False, "broker": False, "ingest": [], "upkeep": []}
    try:
        async with request.app.state.pool.connection(timeout=2) as conn:
            cur = await conn.execute(
                "SELECT client_id, committed_at, lag_ms, "
                "extract(epoch FROM now() - committed_at) FROM ingest_progress ORDER BY 1"
            )
            body["ingest"] = [
                {
                    "client_id": r[0],
                    "committed_at": r[1].isoformat(),
                    "lag_ms": r[2],
                    "idle_s": float(r[3]),
                }
                for r in await cur.fetchall()
            ]
            # Shown, not a reason to leave the load balancer: the API answers all the same.
            body["upkeep"] = [job.summary() for job in await upkeep.statuses(conn)]
            body["database"] = True
    except Exception:  # noqa: BLE001 - any failure here means "not ready", which is the answer
        body["database"] = False
    body["broker"] = await _broker_reachable(request.app.state.settings.broker_url)
    ready = body["database"] and body["broker"]
    subscriber = request.app.state.ingest
    if subscriber is not None:
        body.update(ingest_status(subscriber))
        ready = ready and subscriber.ready
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """Prometheus text format: ingest, alert delivery, open cases by state, nodes by
    liveness (the last two read from the database now)."""
    settings = request.app.state.settings
    if (refusal := settings.metrics_refusal(request.headers.get("authorization", ""))) is not None:
        raise Unauthorized(refusal)
    async with request.app.state.pool.connection() as conn:
        await refresh_from_database(conn, settings.fleet, settings.ingest_reorder_window_s)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
