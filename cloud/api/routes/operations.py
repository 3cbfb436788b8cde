"""For operators: what ingest could not store, and the sequence gaps per node."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from psycopg import sql
from psycopg.rows import class_row, dict_row

from cloud.api.contract import refusals
from cloud.api.deps import Conn, IngestOperator, Moment
from cloud.api.schemas import DeadLetterOut, GapOut, GapsWrittenOff, GapWriteOffIn
from cloud.db import audit
from cloud.errors import Conflict, NotFound
from cloud.ingest.dead_letters import Cause
from protocols.identifiers import NODE_ID_PATTERN

router = APIRouter(prefix="/ingest", tags=["ingest"])

# A gap as the API shows it: the columns of GapOut, listed and returned alike.
_GAP = sql.SQL(", ").join(sql.Identifier(name) for name in GapOut.model_fields)


@router.get("/dead-letters", response_model=list[DeadLetterOut])
async def dead_letters(
    principal: IngestOperator,
    conn: Conn,
    node_id: Annotated[str | None, Query(max_length=64)] = None,
    cause: Cause | None = None,
    since: Annotated[
        Moment | None, Query(description="Only those delivered at or after this time.")
    ] = None,
    before_id: Annotated[
        int | None,
        Query(
            ge=1,
            le=2**63 - 1,
            description="The next page: the smallest `id` of the page before it.",
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[DeadLetterOut]:
    """The messages ingest refused, newest first (by `id`), with the field, the reason and
    what the message was (its size, sha256 and first bytes; not the payload)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT id, received_at, last_received_at, deliveries, topic, node_id, field, "
            "reason, cause, size_bytes, sha256, prefix FROM ingest_dead_letters "
            "WHERE (%(node)s::text IS NULL OR node_id = %(node)s) "
            "AND (%(cause)s::text IS NULL OR cause = %(cause)s) "
            "AND (%(since)s::timestamptz IS NULL OR last_received_at >= %(since)s) "
            "AND (%(before)s::bigint IS NULL OR id < %(before)s) "
            "ORDER BY id DESC LIMIT %(limit)s",
            {
                "node": node_id,
                "cause": None if cause is None else cause.value,
                "since": since,
                "before": before_id,
                "limit": limit,
            },
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
    """Ranges of event seqs a node sent but ingest has not seen (open), or saw late, or an
    operator wrote off."""
    async with conn.cursor(row_factory=class_row(GapOut)) as cur:
        await cur.execute(
            sql.SQL(
                "SELECT {} FROM seq_gaps "
                "WHERE (%s::text IS NULL OR node_id = %s) AND (NOT %s OR closed_at IS NULL) "
                "ORDER BY id DESC LIMIT %s"
            ).format(_GAP),
            (node_id, node_id, open_only, limit),
        )
        return await cur.fetchall()


@router.post(
    "/gaps/{gap_id}/write-off",
    response_model=GapOut,
    responses=refusals((409, "The gap is closed already.")),
)
async def write_off_gap(
    principal: IngestOperator,
    conn: Conn,
    gap_id: Annotated[int, Path(ge=1)],
    body: GapWriteOffIn,
) -> GapOut:
    """Close an open gap no event will fill (a box's seq jumped, its outbox was wiped on
    site): it leaves `gridwatch_events_missing`, keeps who and why, and is audited. Events
    of the range that still come are stored as any others."""
    async with conn.transaction():
        async with conn.cursor(row_factory=class_row(GapOut)) as cur:
            await cur.execute(
                sql.SQL(
                    "UPDATE seq_gaps SET closed_at = now(), written_off_by = %s, "
                    "write_off_reason = %s WHERE id = %s AND closed_at IS NULL RETURNING {}"
                ).format(_GAP),
                (principal.subject, body.reason, gap_id),
            )
            gap = await cur.fetchone()
        if gap is None:
            found = await conn.execute("SELECT closed_at FROM seq_gaps WHERE id = %s", (gap_id,))
            if await found.fetchone() is None:
                raise NotFound(f"gap {gap_id} not found")
            raise Conflict(f"gap {gap_id} is closed already")
        await audit.record(
            conn,
            principal,
            "gap.write_off",
            target_type="seq_gap",
            target_id=str(gap_id),
            detail={
                "node_id": gap.node_id,
                "first_seq": gap.first_seq,
                "last_seq": gap.last_seq,
                "reason": body.reason,
            },
        )
    return gap


@router.post("/nodes/{node_id}/gaps/write-off", response_model=GapsWrittenOff)
async def write_off_node_gaps(
    principal: IngestOperator,
    conn: Conn,
    node_id: Annotated[str, Path(pattern=NODE_ID_PATTERN)],
    body: GapWriteOffIn,
) -> GapsWrittenOff:
    """Close every open gap of a box at once (a box that skipped every other seq leaves
    thousands), as one audited write-off. Holes younger than the reorder window are not
    gaps yet and stay."""
    async with conn.transaction():
        cur = await conn.execute(
            "WITH closed AS (UPDATE seq_gaps SET closed_at = now(), written_off_by = %s, "
            "write_off_reason = %s WHERE node_id = %s AND closed_at IS NULL "
            "RETURNING last_seq - first_seq + 1 AS events) "
            "SELECT count(*), coalesce(sum(events), 0) FROM closed",
            (principal.subject, body.reason, node_id),
        )
        gaps, events = await cur.fetchone() or (0, 0)
        if gaps:
            await audit.record(
                conn,
                principal,
                "gap.write_off",
                target_type="node",
                target_id=node_id,
                detail={"gaps": gaps, "events": int(events), "reason": body.reason},
            )
    return GapsWrittenOff(gaps=gaps, events=int(events))
