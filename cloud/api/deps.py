"""Dependencies route signatures read naturally: a connection, the settings, the store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from psycopg import AsyncConnection

from cloud.settings import CloudSettings
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


Conn = Annotated[AsyncConnection, Depends(get_conn)]
Settings = Annotated[CloudSettings, Depends(get_settings)]
Store = Annotated[SnapshotStore, Depends(get_store)]
