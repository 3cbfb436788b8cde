"""Domain errors → HTTP statuses, with short stable `detail` strings."""

from __future__ import annotations

from fastapi import FastAPI, Request
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


def install_error_handlers(app: FastAPI) -> None:
    for error, status in _STATUS.items():

        def handler(request: Request, exc: Exception, status: int = status) -> JSONResponse:
            # RFC 6750: a 401 says which scheme to use.
            headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
            if isinstance(exc, TooManyRequests):
                headers = {"Retry-After": str(exc.retry_after_s)}
            return JSONResponse({"detail": str(exc)}, status_code=status, headers=headers)

        app.add_exception_handler(error, handler)
