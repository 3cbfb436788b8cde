"""Broker account passwords in Mosquitto 2's own hash format (`$7$`: PBKDF2-SHA512, as
`mosquitto_passwd` writes it). The service and the provisioning tool both make them, so
only hashes ever leave the place a password was made."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets

ITERATIONS = 101  # mosquitto_passwd's choice for $7$
SALT_BYTES = 12
HASH_PATTERN = r"^\$7\$[0-9]{1,7}\$[A-Za-z0-9+/=]{8,64}\$[A-Za-z0-9+/=]{80,100}$"


def new_password() -> str:
    """32 URL-safe characters: typed by nobody, read by the box from its variables."""
    return secrets.token_urlsafe(24)


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    salt = salt if salt is not None else os.urandom(SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, ITERATIONS)
    return f"$7${ITERATIONS}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def is_password_hash(text: str) -> bool:
    return re.fullmatch(HASH_PATTERN, text) is not None


def verify_password(password: str, hashed: str) -> bool:
    """Whether `password` matches a `$7$` hash."""
    if not is_password_hash(hashed):
        return False
    _, _, iterations, salt, digest = hashed.split("$")
    expected = hashlib.pbkdf2_hmac(
        "sha512", password.encode(), base64.b64decode(salt), int(iterations)
    )
    return hmac.compare_digest(expected, base64.b64decode(digest))
