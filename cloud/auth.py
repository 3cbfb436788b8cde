"""Credentials: argon2 password hashes, signed access tokens (JWT), long-lived API tokens.

Access tokens are short-lived JWTs (HS256) carrying the role and unit, so most requests
need no lookup. API tokens are random secrets shown once; only their SHA-256 is stored
(a 256-bit random secret needs no slow hash), and each use is checked against the
database so a revoked token stops at once.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from cloud.access import Principal, Role
from cloud.errors import Unauthorized
from cloud.tiers import Level

ISSUER = "gridwatch"
ALGORITHM = "HS256"
API_TOKEN_PREFIX = "gwt_"  # noqa: S105 - a marker that tells token kinds apart, not a secret

# One lane: a hash takes one core (four lanes took all of a small box's for each sign-in,
# so a flood of them starved the API however few were hashed at once).
_hasher = PasswordHasher(parallelism=1)
# Verified against when the user does not exist, so a wrong username costs the same time.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and bool(password_hash)
    except (VerificationError, InvalidHashError):
        return False


def new_password() -> str:
    """A password to print once for a new account."""
    return secrets.token_urlsafe(12)


@dataclass(frozen=True)
class AccessClaims:
    """What an access token says: who, which of the user's token versions it belongs to
    (None for one minted by a holder of the key for a service, not at sign-in), and when it
    expires."""

    principal: Principal
    version: int | None
    issued_at: datetime
    expires_at: datetime


def issue_access_token(
    principal: Principal,
    *,
    key: bytes,
    lifetime_s: int,
    version: int | None = None,
    kid: str | None = None,
    now: datetime | None = None,
) -> str:
    issued = now or datetime.now(UTC)
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "sub": principal.subject,
        "role": principal.role.value,
        "unit": principal.unit_code,
        "lvl": principal.level.value,
        "iat": issued,
        "exp": issued + timedelta(seconds=lifetime_s),
    }
    if version is not None:
        claims["ver"] = version
    if principal.department_code:
        claims["dept"] = principal.department_code
    return jwt.encode(claims, key, algorithm=ALGORITHM, headers={"kid": kid} if kid else None)


def token_key_id(token: str) -> str | None:
    """The name of the key a token says it was signed with (checked by its signature)."""
    try:
        kid = jwt.get_unverified_header(token).get("kid")
    except jwt.InvalidTokenError as exc:
        raise Unauthorized("invalid token") from exc
    if kid is not None and not isinstance(kid, str):
        raise Unauthorized("invalid token")
    return kid


def read_access_token(token: str, *, key: bytes) -> AccessClaims:
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],
            issuer=ISSUER,
            options={"require": ["exp", "iat", "sub", "iss"]},
        )
        principal = Principal(
            subject=claims["sub"],
            role=Role(claims["role"]),
            unit_code=claims["unit"],
            level=Level(claims["lvl"]),
            department_code=claims.get("dept"),
        )
        version = claims.get("ver")
        if version is not None and not isinstance(version, int):
            raise ValueError("ver")
        return AccessClaims(
            principal,
            version,
            datetime.fromtimestamp(claims["iat"], UTC),
            datetime.fromtimestamp(claims["exp"], UTC),
        )
    except jwt.ExpiredSignatureError as exc:
        raise Unauthorized("token expired") from exc
    except (jwt.InvalidTokenError, KeyError, ValueError, TypeError) as exc:
        raise Unauthorized("invalid token") from exc


def new_api_token() -> tuple[str, bytes]:
    """A new API token and the hash to store; the token itself is shown once."""
    token = API_TOKEN_PREFIX + secrets.token_urlsafe(32)
    return token, api_token_hash(token)


def api_token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def is_api_token(token: str) -> bool:
    return token.startswith(API_TOKEN_PREFIX)
