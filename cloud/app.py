"""The FastAPI application: `create_app(settings)`; the pool opens in the lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from psycopg_pool import AsyncConnectionPool

from cloud.alerts.hub import AlertHub
from cloud.alerts.relay import AlertRelay
from cloud.alerts.webhooks import WebhookDispatcher
from cloud.api.contract import document_contract
from cloud.api.deps import TokenVersions
from cloud.api.errors import install_error_handlers
from cloud.api.guards import Guards, redact_access_log
from cloud.api.routes import alerts as alert_routes
from cloud.api.routes import (
    auth,
    case_rules,
    cases,
    events,
    fleet,
    health,
    nodes,
    operations,
    org,
    registry,
    web,
)
from cloud.api.routes import (
    webhooks as webhook_routes,
)
from cloud.cases.timers import timer_loop
from cloud.database import database_url
from cloud.fleet.config_relay import ConfigRelay
from cloud.fleet.monitor import monitor_loop
from cloud.ingest.subscriber import Subscriber
from cloud.publisher import BrokerPublisher
from cloud.settings import CloudSettings
from cloud.signing import SigningKeys
from cloud.snapshots import snapshot_store

logger = logging.getLogger(__name__)

DESCRIPTION = """\
gridwatch's county service. Events from every edge box, stored once; counts per hour and
day; the state and health of each node; what ingest could not store, and why; the org tree
and the cases that move through it from intake to closure.

Sign in at `/api/v1/auth/token` (OAuth2 password flow) and send `Authorization: Bearer
<token>`; apps use an API token the same way. Every answer is limited to the caller's unit.

Times are ISO 8601; lists page with an opaque `cursor` (pass `next_cursor` back).
"""


def create_app(settings: CloudSettings, *, ingest: Subscriber | None = None) -> FastAPI:
    """The API; `ingest`: the subscriber of an ingest running in this process, whose
    readiness /readyz reports."""
    pool = AsyncConnectionPool(
        database_url(settings),
        open=False,
        min_size=1,
        max_size=10,
        # A request waits this long for a connection, then answers 503: the database is
        # away or every connection is busy for longer than a person would wait.
        timeout=10,
        kwargs={"autocommit": True, "application_name": "gridwatch-api"},
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await pool.open(wait=True, timeout=30)
        async with pool.connection() as conn:
            row = await (
                await conn.execute(
                    "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"
                )
            ).fetchone()
            app.state.timescale = row is not None
            await app.state.signing.load(conn)
        timers = asyncio.create_task(
            timer_loop(
                pool,
                interval_s=settings.case_timer_interval_s,
            ),
            name="case-timers",
        )
        monitor = asyncio.create_task(
            monitor_loop(database_url(settings), settings.fleet), name="fleet-monitor"
        )
        publisher.start()
        await alerts.start()
        relay.start()
        config_relay.start()
        webhooks.start()
        logger.info("API ready; database: %s", "TimescaleDB" if row else "plain PostgreSQL")
        yield
        await webhooks.stop()
        await config_relay.stop()
        await relay.stop()
        await alerts.stop()
        publisher.stop()
        for task in (timers, monitor):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await pool.close()

    # /docs and /redoc are the web router's, from local files (FastAPI's load a CDN).
    app = FastAPI(
        title="gridwatch",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.ingest = ingest
    app.state.pool = pool
    app.state.token_versions = TokenVersions()
    app.state.signing = SigningKeys(settings)
    app.state.snapshots = snapshot_store(settings)
    app.state.publisher = publisher = BrokerPublisher(settings)
    app.state.alerts = alerts = AlertHub(pool, database_url(settings), settings.public_url)
    relay = AlertRelay(pool, publisher, alerts)
    config_relay = ConfigRelay(pool, publisher, retry_after_s=settings.fleet.config_retry_after_s)
    webhooks = WebhookDispatcher(pool, alerts, settings)
    install_error_handlers(app)
    app.add_middleware(Guards)
    redact_access_log()
    app.include_router(health.router)
    app.include_router(events.router, prefix="/api/v1")
    app.include_router(nodes.router, prefix="/api/v1")
    app.include_router(fleet.router, prefix="/api/v1")
    app.include_router(registry.router, prefix="/api/v1")

    app.include_router(operations.router, prefix="/api/v1")
    app.include_router(auth.router, prefix="/api/v1")
    app.include_router(org.router, prefix="/api/v1")
    app.include_router(cases.router, prefix="/api/v1")
    app.include_router(case_rules.router, prefix="/api/v1")
    app.include_router(alert_routes.router, prefix="/api/v1")
    app.include_router(webhook_routes.router, prefix="/api/v1")
    app.include_router(web.router)
    document_contract(app)

    return app
