"""Dependencies route signatures read naturally: a connection, the settings, the store, the
caller."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import replace
from datetime import UTC, datetime
from typing import Annotated, Any

from cachetools import TTLCache
from fastapi import Depends, Query, Request
from fastapi.security import OAuth2PasswordBearer
from psycopg import AsyncConnection
from pydantic import BeforeValidator, WithJsonSchema

from cloud.access import Permission, Principal
from cloud.auth import (
    AccessClaims,
    api_token_hash,
    is_api_token,
    read_access_token,
    token_key_id,
)
from cloud.db import org as org_db
from cloud.errors import Forbidden, Unauthorized
from cloud.publisher import BrokerPublisher
from cloud.settings import CloudSettings
from cloud.signing import SigningKeys
from cloud.snapshots import SnapshotStore


async def get_conn(request: Request) -> AsyncIterator[AsyncConnection]:
    async with request.app.state.pool.connection() as conn:
        yield conn


def get_settings(request: Request) -> CloudSettings:
    settings: CloudSettings = request.app.state.settings
    return settings


def get_store(request: Request) -> SnapshotStore:
    store: SnapshotStore = request.app.state.snapshots
    return store


def get_publisher(request: Request) -> BrokerPublisher:
    publisher: BrokerPublisher = request.app.state.publisher
    return publisher


# RFC 3339 with its zone, years 1900 to 9000: ranges are widened by days on either side, and
# year 1 or 9999 overflowed into a 500; a bare number was read as seconds since 1970.
MOMENT_PATTERN = (
    r"^(19\d\d|[2-8]\d\d\d|9000)-\d\d-\d\d[Tt ]\d\d:\d\d(:\d\d(\.\d+)?)?([Zz]|[+-]\d\d:\d\d)$"
)
_MOMENT = re.compile(MOMENT_PATTERN)


def _moment_text(value: object) -> object:
    if isinstance(value, datetime) and 1900 <= value.year <= 9000 and value.tzinfo is not None:
        return value
    if not isinstance(value, str) or not _MOMENT.match(value):
        raise ValueError(
            "must be a date and time with its zone, between the years 1900 and 9000 "
            "(e.g. 2026-12-08T09:00:00+08:00)"
        )
    return value


# A time a query asks about (from, to, since).
Moment = Annotated[
    datetime,
    BeforeValidator(_moment_text),
    WithJsonSchema({"type": "string", "format": "date-time", "pattern": MOMENT_PATTERN}),
]

# A revoked token (password changed, user deactivated or moved) stops within this.
TOKEN_VERSION_TTL_S = 2.0

Conn = Annotated[AsyncConnection, Depends(get_conn)]
UnitQuery = Annotated[
    str | None,
    Query(
        description="Org unit code: the unit and all below it (inside the caller's jurisdiction).",
        max_length=32,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$",
    ),
]
Publisher = Annotated[BrokerPublisher, Depends(get_publisher)]
Settings = Annotated[CloudSettings, Depends(get_settings)]
Store = Annotated[SnapshotStore, Depends(get_store)]

_bearer = OAuth2PasswordBearer(
    tokenUrl="/api/v1/auth/token",
    auto_error=False,
    description="An access token from /api/v1/auth/token, or an API token (gwt_...).",
)


class TokenVersions:
    """Each user's current token version (None: unknown or deactivated), read from the
    database at most every TOKEN_VERSION_TTL_S per user and instance: a revoked token stops
    within that, at the cost of a dictionary lookup per request in between. A token issued
    after the value was read may know better (the user was just reactivated, or changed
    their password and signed in again): it is checked against the database."""

    def __init__(self) -> None:
        self._cache: TTLCache[str, tuple[int | None, datetime]] = TTLCache(
            maxsize=100_000, ttl=TOKEN_VERSION_TTL_S
        )

    async def holds(self, app: Any, claims: AccessClaims) -> bool:
        username = claims.principal.subject
        cached = self._cache.get(username)
        # iat has whole seconds: a token of the same second as the read may be newer.
        if cached is None or claims.issued_at >= cached[1].replace(microsecond=0):
            async with app.state.pool.connection() as conn:
                version = await org_db.token_version(conn, username)
            cached = (version, datetime.now(UTC))
            self._cache[username] = cached
        return cached[0] == claims.version


async def principal_from_token(app: Any, token: str | None) -> Principal:
    """The caller behind an access token or an API token (HTTP and WebSocket alike);
    Unauthorized for none, an expired one or a revoked one."""
    if not token:
        raise Unauthorized("not signed in")
    if is_api_token(token):
        async with app.state.pool.connection() as conn:
            principal = await org_db.principal_for_api_token(
                conn, api_token_hash(token), datetime.now(UTC)
            )
        if principal is None:
            raise Unauthorized("invalid token")
        return principal
    keys: SigningKeys = app.state.signing
    key = await keys.checking(app, token_key_id(token))
    if key is None:
        raise Unauthorized("invalid token")  # signed with a key rotated out, or none of ours
    claims = read_access_token(token, key=key)
    versions: TokenVersions = app.state.token_versions
    if claims.version is not None and not await versions.holds(app, claims):
        raise Unauthorized("token revoked")
    return claims.principal


async def get_principal(
    request: Request, token: Annotated[str | None, Depends(_bearer)]
) -> Principal:
    principal = await principal_from_token(request.app, token)
    return replace(principal, remote_addr=request.client.host if request.client else "")


Caller = Annotated[Principal, Depends(get_principal)]


# Every `require` check: an operation depending on one may answer 403 (its OpenAPI says so).
ROLE_CHECKS: set[Callable[..., Any]] = set()


def require(permission: Permission) -> Callable[..., Coroutine[Any, Any, Principal]]:
    """A dependency that lets through callers whose role has `permission`."""

    async def check(principal: Caller) -> Principal:
        if not principal.can(permission):
            raise Forbidden(
                f"a {principal.role.value} may not {permission.value.replace('_', ' ')}"
            )
        return principal

    ROLE_CHECKS.add(check)
    return check


EventReader = Annotated[Principal, Depends(require(Permission.READ_EVENTS))]
FleetReader = Annotated[Principal, Depends(require(Permission.READ_FLEET))]
FleetOperator = Annotated[Principal, Depends(require(Permission.OPERATE_FLEET))]

CaseReader = Annotated[Principal, Depends(require(Permission.READ_CASES))]
IngestOperator = Annotated[Principal, Depends(require(Permission.OPERATE_INGEST))]
OrgManager = Annotated[Principal, Depends(require(Permission.MANAGE_ORG))]
AuditReader = Annotated[Principal, Depends(require(Permission.READ_AUDIT))]
