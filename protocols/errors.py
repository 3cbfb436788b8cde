"""Errors raised at the wire boundary: a bad topic, a bad identifier, a bad payload."""

from __future__ import annotations


class ProtocolError(ValueError):
    """Base class for everything the wire contract refuses."""


class InvalidIdentifier(ProtocolError):
    """A node id, camera id or org code that cannot be used as a topic segment."""

    def __init__(self, kind: str, value: str, reason: str) -> None:
        self.kind = kind
        self.value = value
        self.reason = reason
        super().__init__(f"invalid {kind} {value!r}: {reason}")


class InvalidTopic(ProtocolError):
    """A topic outside the gridwatch tree, or one whose segments are malformed."""

    def __init__(self, topic: str, reason: str) -> None:
        self.topic = topic
        self.reason = reason
        super().__init__(f"invalid topic {topic!r}: {reason}")


class InvalidPayload(ProtocolError):
    """A payload that does not decode into its message model; names topic, field and reason."""

    def __init__(
        self,
        topic: str,
        field: str,
        reason: str,
        problems: list[tuple[str, str]] | None = None,
    ) -> None:
        self.topic = topic
        self.field = field
        self.reason = reason
        # Every (field, reason) found, the first being `field`/`reason`: a rejected
        # config reports all of them at once.
        self.problems = problems or [(field, reason)]
        super().__init__(f"invalid payload on {topic or '<no topic>'}: {field}: {reason}")
