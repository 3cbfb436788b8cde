"""Commands from the service to nodes (QoS 1), through the service's publisher.

A node's session is persistent, so a command to a node that is offline waits at the
broker until it returns (or until the request's `expires_at`, after which the node
answers with an error). The node's answer comes back through ingest, like every report.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from uuid6 import uuid7

from cloud.publisher import BrokerPublisher
from protocols import CommandRequest, encode
from protocols.enums import CommandName
from protocols.topics import command_topic

logger = logging.getLogger(__name__)

COMMAND_LIFETIME = timedelta(minutes=10)


def make_command(node_id: str, command: CommandName, **args: Any) -> CommandRequest:
    issued = datetime.now(UTC)
    return CommandRequest(
        request_id=uuid7(),
        node_id=node_id,
        command=command.value,
        args=args,
        issued_at=issued,
        expires_at=issued + COMMAND_LIFETIME,
    )


def send_command(publisher: BrokerPublisher, request: CommandRequest) -> UUID:
    """Publish a command and wait for the broker; BrokerUnavailable when it does not come."""
    publisher.publish([(command_topic(request.node_id, request.request_id), encode(request))])
    logger.info(
        "command sent request_id=%s node_id=%s command=%s",
        request.request_id,
        request.node_id,
        request.command,
    )
    return request.request_id
