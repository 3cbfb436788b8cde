"""Domain errors → HTTP statuses, with short stable `detail` strings."""

from __future__ import annotations

import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

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


def _finite(value: Any) -> Any:
    """The input echoed in a 422, as JSON can carry it (NaN and infinities as text)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


async def _invalid(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422, whose echo of a NaN in the body made the answer itself fail (500)."""
    assert isinstance(exc, RequestValidationError)
    return JSONResponse({"detail": _finite(jsonable_encoder(exc.errors()))}, status_code=422)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _invalid)
    for error, status in _STATUS.items():

        def handler(request: Request, exc: Exception, status: int = status) -> JSONResponse:
            # RFC 6750: a 401 says which scheme to use.
            headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
            if isinstance(exc, TooManyRequests):
                headers = {"Retry-After": str(exc.retry_after_s)}
            return JSONResponse({"detail": str(exc)}, status_code=status, headers=headers)

        app.add_exception_handler(error, handler)
