"""Commands from the cloud, each answered with a CommandResponse carrying its request id."""

from __future__ import annotations

import logging
import os
import socket
import urllib.request
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from edge.events import render_snapshots
from edge.outbox import Message, Priority
from protocols import CommandRequest, CommandResponse, encode
from protocols.base import utc_now
from protocols.config import PublishSettings
from protocols.enums import CommandName, ReplyStatus, SnapshotVariant
from protocols.topics import response_topic, snapshot_topic

if TYPE_CHECKING:
    from edge.agent import Agent

logger = logging.getLogger(__name__)


class CommandError(Exception):
    """A command that cannot be carried out; the reason goes back to the cloud."""


Handler = Callable[[CommandRequest], dict[str, Any]]


def _text(args: dict[str, Any], name: str) -> str:
    value = args.get(name)
    if not isinstance(value, str) or not value:
        raise CommandError(f"argument {name!r} (a non-empty string) is required")
    return value


class Commands:
    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.handlers: dict[str, Handler] = {
            CommandName.SNAPSHOT: self.snapshot,
            CommandName.RESTART_CAMERA: self.restart_camera,
            CommandName.RELOAD_CONFIG: self.reload_config,
            CommandName.IDENTIFY: self.identify,
            CommandName.RECHECK_ZONE: self.recheck_zone,
        }

    def handle(self, request: CommandRequest, now: datetime | None = None) -> CommandResponse:
        now = now or utc_now()
        try:
            if request.expires_at is not None and request.expires_at < now:
                raise CommandError(f"expired at {request.expires_at.isoformat()}")
            handler = self.handlers.get(request.command)
            if handler is None:
                raise CommandError(
                    f"unknown command {request.command!r}; this node knows "
                    f"{', '.join(sorted(self.handlers))}"
                )
            data = handler(request)
            logger.info(
                "command done command=%s request_id=%s", request.command, request.request_id
            )
            return CommandResponse(
                request_id=request.request_id,
                node_id=request.node_id,
                status=ReplyStatus.OK,
                data=data,
                responded_at=utc_now(),
            )
        except (CommandError, KeyError, LookupError) as exc:
            reason = exc.args[0] if exc.args else str(exc)
            logger.warning(
                "command refused command=%s request_id=%s reason=%s",
                request.command,
                request.request_id,
                reason,
            )
            return CommandResponse(
                request_id=request.request_id,
                node_id=request.node_id,
                status=ReplyStatus.ERROR,
                error=str(reason).replace("\x00", "\\0")[:1024],  # the wire carries no NUL
                responded_at=utc_now(),
            )

    def respond(self, response: CommandResponse) -> Message:
        return Message(
            response_topic(response.node_id, response.request_id),
            encode(response),
            Priority.CONTROL,
        )

    # ---- the commands ------------------------------------------------------------------

    def _publish_snapshot(
        self, request: CommandRequest, image: Any, boxes: list[tuple[float, float, float, float]]
    ) -> dict[str, Any]:
        publish: PublishSettings = self.agent.publish_settings
        box = boxes[0] if len(boxes) == 1 else None
        rendered = render_snapshots(image, box, publish)
        meta, data = rendered[SnapshotVariant.FRAME]
        topic = snapshot_topic(self.agent.node_id, request.request_id, SnapshotVariant.FRAME)
        self.agent.outbox.add([Message(topic, data, Priority.SNAPSHOT)])
        self.agent.publisher_notify()
        return {
            "snapshot_topic": topic,
            "sha256": meta.sha256,
            "size_bytes": meta.size_bytes,
            "width": meta.width,
            "height": meta.height,
        }

    def snapshot(self, request: CommandRequest) -> dict[str, Any]:
        camera_id = _text(request.args, "camera_id")

        def take(pipeline: Any) -> Any:
            if pipeline.last_frame is None:
                raise CommandError(f"camera {camera_id} has no frame yet")
            return pipeline.last_frame

        frame = self.agent.analyzer.with_pipeline(camera_id, take)
        return {"camera_id": camera_id, **self._publish_snapshot(request, frame.image, [])}

    def restart_camera(self, request: CommandRequest) -> dict[str, Any]:
        camera_id = _text(request.args, "camera_id")
        self.agent.analyzer.restart_camera(camera_id)
        return {"camera_id": camera_id, "restarted": True}

    def reload_config(self, request: CommandRequest) -> dict[str, Any]:
        version = self.agent.config_manager.reload()
        return {"config_version": version}

    def identify(self, request: CommandRequest) -> dict[str, Any]:
        logger.warning("identify requested: this is node %s", self.agent.node_id)
        blinked = _balena_blink()
        return {
            "node_id": self.agent.node_id,
            "hostname": socket.gethostname(),
            "boot_id": str(self.agent.boot_id),
            "led_blinked": blinked,
        }

    def recheck_zone(self, request: CommandRequest) -> dict[str, Any]:
        camera_id = _text(request.args, "camera_id")
        rule_id = _text(request.args, "rule_id")
        present, frame = self.agent.analyzer.with_pipeline(  # type: ignore[misc]
            camera_id, lambda pipeline: pipeline.recheck(rule_id)
        )
        snapshot = self._publish_snapshot(request, frame.image, [t.xyxy for t in present])
        return {
            "camera_id": camera_id,
            "rule_id": rule_id,
            "present": bool(present),
            "objects": len(present),
            "labels": sorted({t.label for t in present}),
            **snapshot,
        }


def _balena_blink() -> bool:
    """Blink the box's LED through the balena supervisor, when the box runs under balena."""
    address = os.environ.get("BALENA_SUPERVISOR_ADDRESS")
    key = os.environ.get("BALENA_SUPERVISOR_API_KEY")
    if not address or not key:
        return False
    if not address.startswith(("http://", "https://")):
        return False
    request = urllib.request.Request(f"{address}/v1/blink?apikey={key}", method="POST")  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            return 200 <= response.status < 300
    except OSError as exc:
        logger.warning("balena supervisor blink failed: %s", exc)
        return False
