"""What an ingest process tells its supervisor and Prometheus: `/readyz` (200 once the broker
granted every subscription; 503, with the broker's refusal, until then) and `/metrics`, on
CLOUD_INGEST_METRICS_PORT. `serve` reports an ingest in its own process on its /readyz."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from cloud.ingest.subscriber import Subscriber
from cloud.settings import CloudSettings

logger = logging.getLogger(__name__)

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def ingest_status(subscriber: Subscriber) -> dict[str, Any]:
    """`ingest_subscribed`, and `ingest_refused` (the filters and reasons) when the broker
    refused a subscription."""
    status: dict[str, Any] = {"ingest_subscribed": subscriber.ready}
    if subscriber.refusal is not None:
        status["ingest_refused"] = subscriber.refusal
    return status


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """A scrape every few seconds is not news."""


def status_app(subscriber: Subscriber, settings: CloudSettings) -> WsgiApp:
    metrics = make_wsgi_app()

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/readyz":
            status = ingest_status(subscriber)
            code = "200 OK" if subscriber.ready else "503 Service Unavailable"
            start_response(code, [("Content-Type", "application/json")])
            return [json.dumps(status).encode()]
        if path == "/healthz":
            start_response("200 OK", [("Content-Type", "application/json")])
            return [b'{"status": "ok"}']
        refusal = settings.metrics_refusal(environ.get("HTTP_AUTHORIZATION", ""))
        if refusal is not None:
            start_response(
                "401 Unauthorized",
                [("Content-Type", "application/json"), ("WWW-Authenticate", "Bearer")],
            )
            return [json.dumps({"detail": refusal}).encode()]
        result: Iterable[bytes] = metrics(environ, start_response)
        return result

    return app


def serve_status(subscriber: Subscriber, settings: CloudSettings) -> None:
    """Serve /readyz, /healthz and /metrics from a daemon thread, for the process's life."""
    server = make_server(
        settings.host,
        settings.ingest_metrics_port or 0,
        status_app(subscriber, settings),
        ThreadingWSGIServer,
        handler_class=_QuietHandler,
    )
    threading.Thread(target=server.serve_forever, name="ingest-status", daemon=True).start()
    logger.info(
        "ingest status on http://%s:%d (/readyz, /metrics)", settings.host, server.server_port
    )
