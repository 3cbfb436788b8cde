"""Command answers to requests the county never sent are dropped before anything parses or
parks them.

The request id is in the topic, and the county records every request before it sends it
(`commands`, `case_checks`): one lookup a batch finds which answers were asked for. A box
sending answers of 250 KB to made-up request ids cost ingest their parsing and held up
every box's events by two minutes; they are now counted
(`gridwatch_ingest_unasked_answers_total`) and acknowledged, and nothing else. An answer to
a request sent to another box still goes the whole way and is a dead letter naming it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from uuid import UUID

import psycopg

from cloud.ingest.subscriber import Received
from cloud.metrics import INGEST_UNASKED_ANSWERS
from protocols.errors import InvalidTopic
from protocols.topics import Channel, NodeTopic, parse_topic

logger = logging.getLogger(__name__)


class Answers:
    """Looks requests up on a connection of its own (the writer's may be mid-batch)."""

    def __init__(self, connect: Callable[[], psycopg.Connection]) -> None:
        self.connect = connect
        self._conn: psycopg.Connection | None = None

    def asked(self, messages: list[Received]) -> list[Received]:
        """`messages` without the answers to requests never sent (all of them when the
        lookup fails: the writer then judges each answer as before)."""
        requests = {m.topic: rid for m in messages if (rid := _request_of(m.topic))}
        if not requests:
            return messages
        try:
            known = self._known(sorted(set(requests.values())))
        except psycopg.Error as exc:
            logger.warning("answers not looked up (%s): the writer judges them", exc)
            self.close()
            return messages
        kept = [m for m in messages if m.topic not in requests or requests[m.topic] in known]
        if dropped := len(messages) - len(kept):
            INGEST_UNASKED_ANSWERS.inc(dropped)
        return kept

    def _known(self, ids: list[UUID]) -> set[UUID]:
        if self._conn is None or self._conn.closed:
            self._conn = self.connect()
        rows = self._conn.execute(
            "SELECT request_id FROM commands WHERE request_id = ANY(%s) "
            "UNION SELECT request_id FROM case_checks WHERE request_id = ANY(%s)",
            (ids, ids),
        ).fetchall()
        self._conn.rollback()  # no transaction left open between batches
        return {row[0] for row in rows}

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _request_of(topic: str) -> UUID | None:
    if "/responses/" not in topic:  # most messages: no parsing
        return None
    try:
        parts = parse_topic(topic)
    except InvalidTopic:
        return None
    if isinstance(parts, NodeTopic) and parts.channel is Channel.RESPONSES:
        return parts.request_id
    return None
