"""Requests from the cloud to a node, and the node's replies in one ok/error envelope."""

from __future__ import annotations

from typing import Self
from uuid import UUID

from pydantic import Field, JsonValue, model_validator

from protocols.base import PastDatetime, Payload, UtcDatetime
from protocols.enums import ReplyStatus
from protocols.identifiers import NodeId, Token


class CommandRequest(Payload):
    """On `commands/<request_id>`. `command` is a token, not an enum, so that a node can
    answer a command it does not know with an error instead of dropping it."""

    request_id: UUID
    node_id: NodeId
    command: Token = Field(examples=["snapshot", "recheck_zone"])
    args: dict[str, JsonValue] = Field(default_factory=dict, max_length=32)
    issued_at: UtcDatetime
    expires_at: UtcDatetime | None = Field(
        default=None, description="A node that receives it later answers with an error."
    )

    @model_validator(mode="after")
    def _expiry_after_issue(self) -> Self:
        if self.expires_at is not None and self.expires_at <= self.issued_at:
            raise ValueError("expires_at must be after issued_at")
        return self


class CommandResponse(Payload):
    """On `responses/<request_id>`: `{"status": "ok"|"error", "data", "error", "request_id"}`."""

    request_id: UUID
    node_id: NodeId
    status: ReplyStatus
    data: dict[str, JsonValue] | None = Field(default=None, max_length=64)
    error: str | None = Field(default=None, min_length=1, max_length=1024)
    responded_at: PastDatetime

    @model_validator(mode="after")
    def _error_matches_status(self) -> Self:
        if (self.status is ReplyStatus.ERROR) != (self.error is not None):
            raise ValueError("status 'error' needs an error message, and 'ok' has none")
        return self
