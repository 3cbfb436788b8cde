"""Domain errors → HTTP statuses, with short stable `detail` strings."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from cloud.errors import BadRequest, NotFound, StorageError

_STATUS = {NotFound: 404, BadRequest: 400, StorageError: 503}


def install_error_handlers(app: FastAPI) -> None:
    for error, status in _STATUS.items():

        def handler(request: Request, exc: Exception, status: int = status) -> JSONResponse:
            return JSONResponse({"detail": str(exc)}, status_code=status)

        app.add_exception_handler(error, handler)
