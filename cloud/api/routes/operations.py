"""For operators: what ingest could not store, and the sequence gaps per node."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from psycopg.rows import class_row, dict_row

from cloud.api.deps import Conn, IngestOperator
from cloud.api.schemas import DeadLetterOut, GapOut

router = APIRouter(prefix="/ingest", tags=["ingest"])


@router.get("/dead-letters", response_model=list[DeadLetterOut])
async def dead_letters(
    principal: IngestOperator, conn: Conn, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> list[DeadLetterOut]:
    """The messages ingest refused, the latest delivered first, with the field, the
    reason and what the message was (its size, sha256 and first bytes; not the payload)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT id, received_at, last_received_at, deliveries, topic, node_id, field, "
            "reason, cause, size_bytes, sha256, prefix FROM ingest_dead_letters "
            "ORDER BY last_received_at DESC, id DESC LIMIT %s",
            (limit,),
        )
        rows = await cur.fetchall()
    return [
        DeadLetterOut(
            **{k: v for k, v in r.items() if k != "prefix"},
            payload_preview=bytes(r["prefix"]).decode("utf-8", "replace"),
        )
        for r in rows
    ]


@router.get("/gaps", response_model=list[GapOut])
async def gaps(
    principal: IngestOperator,
    conn: Conn,
    node_id: Annotated[str | None, Query(max_length=64)] = None,
    open_only: bool = True,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[GapOut]:
    """Ranges of event seqs a node sent but ingest has not seen (open), or saw late."""
    async with conn.cursor(row_factory=class_row(GapOut)) as cur:
        await cur.execute(
            "SELECT id, node_id, first_seq, last_seq, detected_at, closed_at FROM seq_gaps "
            "WHERE (%s::text IS NULL OR node_id = %s) AND (NOT %s OR closed_at IS NULL) "
            "ORDER BY id DESC LIMIT %s",
            (node_id, node_id, open_only, limit),
        )
        return await cur.fetchall()
