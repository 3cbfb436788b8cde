"""Errors of the cloud service; api/errors.py maps them to HTTP statuses."""

from __future__ import annotations


class CloudError(Exception):
    """Base class for cloud errors."""


class NotFound(CloudError):
    """The thing asked for does not exist (or is outside the caller's jurisdiction)."""


class BadRequest(CloudError):
    """A request that is well-formed but cannot be answered (bad cursor, bad range)."""


class StorageError(CloudError):
    """The snapshot store cannot read or write."""


class SnapshotMismatch(CloudError):
    """A stored snapshot's bytes no longer hash to the sha256 on record: it is not served."""


class ServiceUnavailable(CloudError):
    """A service the process needs cannot be started or reached (says what to do)."""


class Conflict(CloudError):
    """The request does not fit the current state (an illegal case transition)."""


class Unauthorized(CloudError):
    """No valid credentials: missing, expired or revoked token, or a wrong password."""


class TooManyRequests(CloudError):
    """Too many attempts (failed sign-ins): answered 429 with `Retry-After`."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Forbidden(CloudError):
    """The caller's role may not do this (outside their unit, it is NotFound instead)."""


class InvalidFile(CloudError):
    """An import file with a bad line; the message names the file, line and field."""


class BrokerUnavailable(CloudError):
    """The MQTT broker did not take a message the service had to send."""


class BrokerRefused(BrokerUnavailable):
    """The broker answered that it will not take some of the messages (PUBACK reason code
    0x80 or above, e.g. Not authorized): `refused` maps their place in the batch to why."""

    def __init__(self, message: str, refused: dict[int, str]) -> None:
        super().__init__(message)
        self.refused = refused
