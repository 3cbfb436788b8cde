"""Where snapshot JPEGs live: a local directory tree by default. One small interface, so an
S3-compatible store can stand in without touching ingest or the API."""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Protocol
from uuid import UUID

from cloud.errors import NotFound, SnapshotMismatch, StorageError
from cloud.settings import CloudSettings
from protocols.identifiers import uuid7_time

logger = logging.getLogger(__name__)


def storage_key(node_id: str, event_id: UUID, variant: str, sha256: str) -> str:
    """`2026/11/25/<node_id>/<event_id>_frame_<sha256>.jpg`: dated by the event id, so old
    days can be pruned; under the node that sent it, so no node writes where another's
    pictures are; named for its bytes, so a file is only ever rewritten with the same bytes
    (a second upload for one event, a forgery or a glitch, lands beside the first, not on
    it). Snapshots stored before keep their keys (`<day>/<event_id>_<variant>.jpg`)."""
    day = uuid7_time(event_id)
    return f"{day:%Y/%m/%d}/{node_id}/{event_id}_{variant}_{sha256}.jpg"


class SnapshotStore(Protocol):
    """Blocking calls: the API runs them in its thread pool."""

    def put(self, key: str, data: bytes) -> None: ...

    def get(self, key: str) -> bytes: ...

    def delete(self, key: str) -> None:
        """Gone afterwards, whether it was there or not."""


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

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink(missing_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot delete snapshot {key}: {exc}") from exc


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_verified(store: SnapshotStore, key: str, sha256: str) -> bytes:
    """The stored bytes, only while they hash to the sha256 on record: a file changed in
    the store (a disk, a bucket, an old key another node could write) is refused, never
    served as the event's picture."""
    data = store.get(key)
    if sha256_hex(data) != sha256:
        logger.error(
            "snapshot %s does not match its recorded sha256 %s (read %d bytes): not served",
            key,
            sha256,
            len(data),
        )
        raise SnapshotMismatch("snapshot does not match its recorded sha256")
    return data


class S3SnapshotStore:
    """Any S3-compatible object store (AWS S3, MinIO, Ceph RGW, the county's OSS): one object
    per snapshot under `prefix`, its sha256 kept in the database beside the key."""

    def __init__(self, bucket: str, prefix: str = "", client: Any = None) -> None:

        import boto3  # only here: the local store needs no AWS library

        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.client = client if client is not None else boto3.client("s3")

    def put(self, key: str, data: bytes) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.put_object(
                Bucket=self.bucket, Key=self.prefix + key, Body=data, ContentType="image/jpeg"
            )
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"cannot store snapshot {key} in s3://{self.bucket}: {exc}") from exc

    def get(self, key: str) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self.prefix + key)
            return bytes(response["Body"].read())
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise NotFound(f"snapshot {key} not found") from exc
            raise StorageError(
                f"cannot read snapshot {key} from s3://{self.bucket}: {exc}"
            ) from exc
        except BotoCoreError as exc:
            raise StorageError(
                f"cannot read snapshot {key} from s3://{self.bucket}: {exc}"
            ) from exc

    def delete(self, key: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:  # S3 answers a missing key's delete with success too
            self.client.delete_object(Bucket=self.bucket, Key=self.prefix + key)
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(
                f"cannot delete snapshot {key} from s3://{self.bucket}: {exc}"
            ) from exc


def snapshot_store(settings: CloudSettings) -> SnapshotStore:
    """The store the settings name: CLOUD_SNAPSHOT_URL=s3://bucket/prefix, else local files."""
    url = settings.snapshot_url
    if url is None:
        return LocalSnapshotStore(settings.snapshots_path)
    import boto3
    from botocore.config import Config

    s3 = settings.s3
    client = boto3.client(
        "s3",
        endpoint_url=s3.endpoint_url,
        region_name=s3.region,
        aws_access_key_id=s3.access_key_id,
        aws_secret_access_key=(
            s3.secret_access_key.get_secret_value() if s3.secret_access_key else None
        ),
        # Retries with backoff are botocore's; path-style addressing suits MinIO-like stores.
        config=Config(
            retries={"max_attempts": 5, "mode": "standard"},
            s3={"addressing_style": s3.addressing_style},
            connect_timeout=5,
            read_timeout=20,
        ),
    )
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    return S3SnapshotStore(bucket, prefix, client)
