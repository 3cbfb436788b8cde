"""The OpenAPI document as the API's contract: what FastAPI derives from the signatures,
and what it cannot see — every status an operation may answer, and that text never holds
a NUL or a lone surrogate (see Guards)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts

from cloud.api.deps import ROLE_CHECKS, get_conn, get_principal, get_publisher
from cloud.api.schemas import ErrorOut

# Why an operation may refuse, unless its route says more precisely. 422 is the document's
# own no (a field's type, range or pattern); 400 is the county's (an unknown unit, a range
# longer than allowed, fields that disagree): a request valid by the schema may meet 400,
# never 422.
REASONS = {
    400: "Well formed, but the county's data or the request's own fields disagree with it "
    "(`detail` says which).",
    401: "Not signed in, or the token has expired or was revoked.",
    403: "The caller's role may not do this.",
    404: "No such thing in the caller's jurisdiction.",
    409: "It conflicts with the current state of what it would change (`detail` says how).",
    429: "Too many requests: try again after `Retry-After` seconds.",
    # A snapshot whose stored bytes no longer hash to the sha256 on record.
    500: "The stored picture does not match its record: not served; the service's log says "
    "which (a person must look at the store).",
    502: "The broker refused the message.",
    503: "The database, the broker or the snapshot store is unavailable: try again after "
    "`Retry-After` seconds.",
}


RETRY_AFTER = {
    "description": "Seconds to wait before trying again.",
    "schema": {"type": "integer", "minimum": 0},
}


def refusals(*statuses: int | tuple[int, str]) -> dict[int | str, dict[str, Any]]:
    """A route's `responses=`: each status it refuses with beyond those every route of its
    kind documents (see `document_contract`), with the route's own reason or the usual one."""
    out: dict[int | str, dict[str, Any]] = {}
    for item in statuses:
        status, reason = item if isinstance(item, tuple) else (item, REASONS[item])
        out[status] = {"model": ErrorOut, "description": reason}
    return out


def _dependants(dependant: Dependant) -> Iterator[Dependant]:
    yield dependant
    for dependency in dependant.dependencies:
        yield from _dependants(dependency)


def document_contract(app: FastAPI) -> None:
    """Add to the OpenAPI document the statuses every operation of a kind can answer, read
    from the route itself: 422 (any query or body, see Guards), 401 and 403 where a caller
    is signed in and checked, 404 for an id in the path or a `unit` asked for, 503 where
    the database or the broker is used, 502 where the broker is. What only some routes
    refuse (400, 409, 500) they say themselves with `refusals`."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()
        schemas = schema.setdefault("components", {}).setdefault("schemas", {})
        schemas.setdefault("ErrorOut", ErrorOut.model_json_schema())
        error = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}}
        invalid = {
            "application/json": {"schema": {"$ref": "#/components/schemas/HTTPValidationError"}}
        }
        for context in iter_route_contexts(app.routes):
            # The context, not the route alone: it holds what include_router added.
            if not isinstance(context.original_route, APIRoute) or not context.include_in_schema:
                continue
            dependants = list(_dependants(context.dependant))
            calls = {d.call for d in dependants if d.call is not None}
            queries = {p.alias for d in dependants for p in d.query_params}
            # An id in the path, or a unit asked for, that names nothing the caller may see.
            statuses = {404} if context.dependant.path_params or "unit" in queries else set()
            if get_principal in calls:
                statuses.add(401)
            if calls & ROLE_CHECKS:
                statuses.add(403)
            # The database (a caller's token version is read there too), or the broker.
            if calls & {get_conn, get_principal, get_publisher}:
                statuses.add(503)
            if get_publisher in calls:
                statuses.add(502)
            path = schema["paths"][context.path_format]
            for method in context.methods or ():
                responses = path[method.lower()]["responses"]
                responses.setdefault("422", {"description": "Validation Error", "content": invalid})
                for status in sorted(statuses):
                    responses.setdefault(
                        str(status), {"description": REASONS[status], "content": error}
                    )
                for code in ("429", "503"):
                    if code in responses:
                        responses[code].setdefault("headers", {"Retry-After": RETRY_AFTER})
        for name, component in schemas.items():
            if name not in ("ValidationError", "HTTPValidationError"):  # they echo bad text
                _plain_text(component)
        _plain_text(schema["paths"])
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


# Text PostgreSQL can store: no NUL (Guards refuses one with a 422, as it does a lone
# surrogate, which no UTF-8 document can hold and JSON Schema's regexes cannot name).
TEXT_PATTERN = "^[^\\x00]*$"


# Formats whose values cannot hold a NUL; a password or free text can.
_NO_NUL_FORMATS = {"uuid", "date", "date-time", "time", "uri", "email", "binary"}


def _plain_text(node: Any) -> None:
    """Give every free-text string schema the pattern the service enforces on it (a string
    with a pattern of its own already names what it may hold)."""
    if isinstance(node, dict):
        if (
            node.get("type") == "string"
            and node.get("format") not in _NO_NUL_FORMATS
            and not node.keys() & {"pattern", "enum", "const"}
        ):
            node["pattern"] = TEXT_PATTERN
        for key, value in node.items():
            if key not in ("example", "examples", "default"):
                _plain_text(value)
    elif isinstance(node, list):
        for item in node:
            _plain_text(item)
