"""Sign-in: access tokens for people, long-lived API tokens for apps and integrations."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Request, Response, status
from fastapi.security import OAuth2PasswordRequestForm
from pydantic import BaseModel, ConfigDict, Field
from uuid6 import uuid7

from cloud import sign_in
from cloud.access import PERMISSIONS, ROLE_LEVELS, Permission, Principal, Role
from cloud.api.contract import refusals
from cloud.api.deps import Caller, Conn, OrgManager, Settings
from cloud.api.schemas import ErrorOut
from cloud.auth import issue_access_token, new_api_token
from cloud.db import audit
from cloud.db import org as db
from cloud.errors import BadRequest, NotFound, TooManyRequests, Unauthorized
from cloud.tiers import Level
from protocols.base import Integer
from protocols.identifiers import ORG_CODE_PATTERN

logger = logging.getLogger(__name__)
router = APIRouter(tags=["auth"])


class TokenOut(BaseModel):
    access_token: str
    token_type: str = "bearer"  # noqa: S105 - the OAuth2 token type, not a secret
    expires_in: int = Field(description="Seconds until the token expires.")
    role: Role
    unit_code: str


class MeOut(BaseModel):
    subject: str
    role: Role
    unit_code: str
    level: Level
    department_code: str | None
    permissions: list[Permission] = Field(
        description="What the caller's role may do: screens offer only these."
    )
    timezone: str = Field(
        description="The county's time zone (IANA): screens show its hours and days, "
        "whatever the browser's own.",
        examples=["Asia/Shanghai"],
    )


@router.post(
    "/auth/token",
    response_model=TokenOut,
    responses={
        400: {"model": ErrorOut, "description": "A form too large (a field over 1 MB)."},
        401: {"model": ErrorOut, "description": "Wrong username or password."},
        429: {
            "model": ErrorOut,
            "description": "Too many failed sign-ins for this account or from this address: "
            "try again after `Retry-After` seconds.",
        },
    },
)
async def login(
    request: Request,
    response: Response,
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    conn: Conn,
    settings: Settings,
) -> TokenOut:
    """OAuth2 password flow: a username and password give a bearer access token. Failed
    attempts are counted per account and per address; past the allowance both are locked
    for a while that grows with each further failure (every lockout audited)."""
    address = request.client.host if request.client else ""
    sign_in.refuse_if_busy(address)
    now = datetime.now(UTC)
    if (wait_s := await sign_in.locked_for(conn, form.username, address, now)) is not None:
        raise TooManyRequests("too many failed sign-ins: try again later", retry_after_s=wait_s)
    user = await db.user_for_login(conn, form.username)
    ok = await sign_in.check_password(
        user["password_hash"] if user else None, form.password, address
    )
    if user is None or not ok or not user["active"]:
        # repr: a username may be a password typed in the wrong box, or hold a line break
        # forging a log line; its first characters and length are enough to follow.
        logger.warning(
            "sign-in refused username=%r (%d characters) from=%s",
            form.username[:3] + "…",
            len(form.username),
            address,
        )
        unit = user["unit_code"] if user else ""
        if (wait_s := await sign_in.failed(conn, form.username, address, unit, now)) is not None:
            raise TooManyRequests("too many failed sign-ins: try again later", retry_after_s=wait_s)
        raise Unauthorized("wrong username or password")
    await sign_in.succeeded(conn, form.username)
    response.headers["Cache-Control"] = "no-store"  # a token is no page to keep (RFC 6749)
    principal = Principal(
        user["username"],
        Role(user["role"]),
        user["unit_code"],
        Level(user["level"]),
        user["department_code"],
    )
    kid, key = await request.app.state.signing.signing(request.app)
    token = issue_access_token(
        principal,
        key=key,
        kid=kid,
        lifetime_s=settings.access_token_s,
        version=user["token_version"],
    )
    return TokenOut(
        access_token=token,
        expires_in=settings.access_token_s,
        role=principal.role,
        unit_code=principal.unit_code,
    )


@router.get("/auth/me", response_model=MeOut)
async def me(principal: Caller, settings: Settings) -> MeOut:
    return MeOut(
        subject=principal.subject,
        role=principal.role,
        unit_code=principal.unit_code,
        level=principal.level,
        department_code=principal.department_code,
        permissions=sorted(PERMISSIONS[principal.role]),
        timezone=settings.timezone,
    )


class ApiTokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{2,63}$", examples=["provincial-grid-sync"])
    role: Role = Field(default=Role.INTEGRATION)
    unit_code: str = Field(pattern=ORG_CODE_PATTERN, examples=["511725106"])
    department_code: str | None = None
    # Every token ends (a year at most): one that never did outlived its maker.
    expires_in_days: Integer = Field(default=365, ge=1, le=365)


class ApiTokenOut(BaseModel):
    token_id: UUID
    token: str = Field(description="Shown once; only its hash is kept.")
    expires_at: datetime


@router.post(
    "/auth/api-tokens",
    response_model=ApiTokenOut,
    status_code=status.HTTP_201_CREATED,
    responses=refusals(400),
)
async def create_api_token(body: ApiTokenIn, principal: OrgManager, conn: Conn) -> ApiTokenOut:
    unit = await db.unit(conn, body.unit_code)
    if unit is None or not principal.covers(body.unit_code):
        raise BadRequest(f"unit_code: no unit {body.unit_code} in your jurisdiction")
    if body.role is Role.COUNTY_ADMIN:
        # An app with every right, surviving its maker's deactivation, minting more of
        # itself: admins are people, signed in.
        raise BadRequest("role: an API token may not be a county admin")
    if Level(unit["level"]) not in ROLE_LEVELS[body.role]:
        raise BadRequest(f"unit_code: a {body.role.value} cannot sit at a {unit['level']}")
    if (body.role is Role.DEPARTMENT_OFFICER) != (body.department_code is not None):
        raise BadRequest("department_code: required for department officers, and only for them")
    if body.department_code is not None and not await db.department_exists(
        conn, body.department_code
    ):
        raise BadRequest(f"department_code: unknown department {body.department_code}")
    token, digest = new_api_token()
    token_id = uuid7()
    expires_at = datetime.now(UTC) + timedelta(days=body.expires_in_days)
    async with conn.transaction():
        await db.insert_api_token(
            conn,
            token_id=token_id,
            name=body.name,
            secret_sha256=digest,
            role=body.role,
            unit_code=body.unit_code,
            department_code=body.department_code,
            created_by=principal.subject,
            expires_at=expires_at,
        )
        await audit.record(
            conn,
            principal,
            "api_token.create",
            target_type="api_token",
            target_id=str(token_id),
            unit_code=body.unit_code,
            detail={"name": body.name, "role": body.role.value},
        )
    return ApiTokenOut(token_id=token_id, token=token, expires_at=expires_at)


@router.delete("/auth/api-tokens/{token_id}", status_code=status.HTTP_204_NO_CONTENT)
async def revoke_api_token(token_id: UUID, principal: OrgManager, conn: Conn) -> None:
    async with conn.transaction():
        if not await db.revoke_api_token(conn, token_id, principal.unit_code):
            raise NotFound("token not found")
        await audit.record(
            conn,
            principal,
            "api_token.revoke",
            target_type="api_token",
            target_id=str(token_id),
            unit_code=principal.unit_code,
        )
