"""Domain errors → HTTP statuses, with short stable `detail` strings."""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import iter_route_contexts
from psycopg import OperationalError
from psycopg_pool import PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from cloud.api.guards import SECURITY_HEADERS
from cloud.errors import (
    BadRequest,
    BrokerRefused,
    BrokerUnavailable,
    Conflict,
    Forbidden,
    NotFound,
    SnapshotMismatch,
    StorageError,
    TooManyRequests,
    Unauthorized,
)

logger = logging.getLogger(__name__)

# How long a client waits before trying again when the database or broker is away.
UNAVAILABLE_RETRY_S = 5

_STATUS = {
    NotFound: 404,
    BadRequest: 400,
    Conflict: 409,
    Unauthorized: 401,
    Forbidden: 403,
    StorageError: 503,
    SnapshotMismatch: 500,  # the store holds other bytes than were stored: a person must look
    BrokerUnavailable: 503,
    BrokerRefused: 502,  # the broker answered, and said no: not a passing outage
    TooManyRequests: 429,
}


# A 422 echoes what it refused, up to this many characters of a text: a 20 MB description
# was echoed whole.
ECHO_CHARS = 200


def _finite(value: Any) -> Any:
    """The input echoed in a 422, as JSON can carry it (NaN and infinities as text) and
    short (long texts cut)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, str) and len(value) > ECHO_CHARS:
        return value[:ECHO_CHARS] + "…"
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


async def _invalid(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422, whose echo of a NaN in the body made the answer itself fail (500)."""
    assert isinstance(exc, RequestValidationError)
    return JSONResponse({"detail": _finite(jsonable_encoder(exc.errors()))}, status_code=422)


# What a database that is away says: no connection (no SQLSTATE), connection exceptions
# (class 08), an administrator's or crash shutdown, a server starting or out of connections.
# Any other OperationalError (a statement timeout, a deadlock, a full disk) is a fault to
# see in the log as a 500, not a "try again".
_AWAY = {"57P01", "57P02", "57P03", "53300"}


def database_away(exc: OperationalError) -> bool:
    return exc.sqlstate is None or exc.sqlstate.startswith("08") or exc.sqlstate in _AWAY


async def _database_down(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, OperationalError) and not database_away(exc):
        raise exc
    logger.warning("database unavailable, answered 503: %s", exc)
    return JSONResponse(
        {"detail": "the database is unavailable: try again shortly"},
        status_code=503,
        headers={"Retry-After": str(UNAVAILABLE_RETRY_S)},
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals; a 405 lists every method the path takes (Starlette names
    only the first route it tried of those on the path)."""
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        allowed: set[str] = set()
        for route in iter_route_contexts(request.app.routes):
            match, _ = route.matches(request.scope)
            if match is not Match.NONE:
                allowed |= route.methods or set()
        headers["Allow"] = ", ".join(sorted(allowed))
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)


async def _server_error(request: Request, exc: Exception) -> JSONResponse:
    """A bug's 500, in the shape of every other refusal and with the security headers (it
    is answered outside the middleware that adds them); the traceback goes to the log."""
    headers = {name.decode(): value.decode() for name, value in SECURITY_HEADERS}
    return JSONResponse({"detail": "internal error"}, status_code=500, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(Exception, _server_error)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    # A connection the pool cannot give, or one lost under a request: the database is
    # down or restarting, which is a 503 to try again, not a 500.
    app.add_exception_handler(PoolTimeout, _database_down)
    app.add_exception_handler(OperationalError, _database_down)
    for error, status in _STATUS.items():

        def handler(request: Request, exc: Exception, status: int = status) -> JSONResponse:
            # RFC 6750: a 401 says which scheme to use.
            headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
            if isinstance(exc, TooManyRequests):
                headers = {"Retry-After": str(exc.retry_after_s)}
            elif status == 503:
                headers = {"Retry-After": str(UNAVAILABLE_RETRY_S)}
            return JSONResponse({"detail": str(exc)}, status_code=status, headers=headers)

        app.add_exception_handler(error, handler)
