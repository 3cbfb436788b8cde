"""Where snapshot JPEGs live: a local directory tree by default. One small interface, so an
S3-compatible store can stand in without touching ingest or the API."""

from __future__ import annotations

import hashlib
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol
from uuid import UUID

from cloud.errors import NotFound, StorageError


def uuid7_time(value: UUID) -> datetime:
    """When a UUIDv7 was made (its first 48 bits are Unix milliseconds)."""
    return datetime.fromtimestamp((value.int >> 80) / 1000, UTC)


def storage_key(event_id: UUID, variant: str) -> str:
    """`2026/11/25/<event_id>_frame.jpg`: dated by the event id, so old days can be pruned."""
    day = uuid7_time(event_id)
    return f"{day:%Y/%m/%d}/{event_id}_{variant}.jpg"


class SnapshotStore(Protocol):
    def put(self, key: str, data: bytes) -> None: ...

    def get(self, key: str) -> bytes: ...


class LocalSnapshotStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise StorageError(f"snapshot key {key!r} leaves the store")
        return path

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as tmp:
                tmp.write(data)
                tmp.flush()
                os.fsync(tmp.fileno())
            os.replace(tmp.name, path)  # a reader never sees half a JPEG
        except OSError as exc:
            raise StorageError(f"cannot store snapshot {key}: {exc}") from exc

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError as exc:
            raise NotFound(f"snapshot {key} not found") from exc


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
