"""The edge agent: cameras → analysis → outbox → broker, plus health, remote config and
commands. `gridwatch edge run` starts one; SIGTERM stops it within a few seconds."""

from __future__ import annotations

import logging
import queue
import signal
import threading
import time
from types import FrameType
from uuid import UUID
from zoneinfo import ZoneInfo

import uuid6
from prometheus_client import start_http_server

from edge.analyzer import Analyzer
from edge.commands import Commands
from edge.detectors.base import Detector
from edge.detectors.registry import create_detector
from edge.errors import EdgeError
from edge.events import EmittedEvent, EventFactory
from edge.health import HealthReporter, metrics_registry
from edge.link import Link
from edge.node_config import ConfigManager, ConfigRejected
from edge.outbox import Message, Outbox, Priority
from edge.pipeline import CameraPipeline, wall_clock
from edge.publisher import Publisher
from edge.settings import EdgeSettings
from protocols import (
    CommandRequest,
    InvalidPayload,
    InvalidTopic,
    NodeConfig,
    Receipt,
    decode_message,
)
from protocols import encode as encode_message
from protocols.config import CameraConfig, ModelSpec, PublishSettings
from protocols.enums import EventKind, Severity
from protocols.events import ModelRef
from protocols.topics import (
    Channel,
    NodeTopic,
    config_desired_topic,
    events_topic,
    health_topic,
    node_commands_filter,
    receipts_topic,
    snapshot_topic,
)

logger = logging.getLogger(__name__)

MB = 1024 * 1024
_ALERT_KINDS = {EventKind.CAMERA_OFFLINE, EventKind.CAMERA_TAMPER}


def event_messages(node_id: str, emitted: EmittedEvent) -> list[Message]:
    """An event and its snapshots as outbox messages; high severity goes first."""
    event = emitted.event
    urgent = event.severity in (Severity.HIGH, Severity.CRITICAL) or event.kind in _ALERT_KINDS
    messages = [
        Message(
            events_topic(node_id),
            encode_message(event),
            Priority.ALERT if urgent else Priority.EVENT,
            seq=event.seq,
        )
    ]
    messages += [
        Message(snapshot_topic(node_id, event.event_id, variant), data, Priority.SNAPSHOT)
        for variant, data in emitted.snapshots.items()
    ]
    return messages


class Agent:
    def __init__(self, settings: EdgeSettings) -> None:
        self.settings = settings
        self.node_id = settings.node_id
        self.boot_id = UUID(bytes=uuid6.uuid7().bytes)
        self.publish_settings = PublishSettings()
        self.timezone = ZoneInfo("Asia/Shanghai")
        self.outbox = Outbox(
            settings.outbox_path,
            budget_bytes=self.publish_settings.outbox_budget_mb * MB,
            receipt_timeout_s=settings.receipt_timeout_s,
        )
        self.analyzer = Analyzer(self._sink, workers=settings.workers)
        self.link = Link(
            settings,
            boot_id=self.boot_id,
            on_published=self._on_published,
            subscriptions=[
                config_desired_topic(self.node_id),
                node_commands_filter(self.node_id),
                receipts_topic(self.node_id),
            ],
        )
        self.publisher = Publisher(self.outbox, self.link)
        self.config_manager = ConfigManager(
            self.node_id, settings.config_path, apply=self.apply_config, send=self.send
        )
        self.commands = Commands(self)
        self.detector: Detector | None = None
        self.model_spec: ModelSpec | None = None
        self.cameras: dict[str, CameraConfig] = {}
        self.health = HealthReporter(
            self.node_id,
            analyzer=self.analyzer,
            outbox=self.outbox,
            data_dir=settings.data_dir,
            model=self._model_ref,
            config_version=lambda: (
                self.config_manager.running.version if self.config_manager.running else None
            ),
        )
        self._stop = threading.Event()

    # ---- plumbing ---------------------------------------------------------------------

    def _on_published(self, mid: int, reason: int) -> None:
        self.publisher.on_published(mid, reason)

    def publisher_notify(self) -> None:
        self.publisher.notify()

    def send(self, message: Message) -> None:
        self.outbox.add([message])
        self.publisher.notify()

    def _sink(self, events: list[EmittedEvent]) -> None:
        self.outbox.add([m for emitted in events for m in event_messages(self.node_id, emitted)])
        self.publisher.notify()

    def _model_ref(self) -> tuple[str, str | None] | None:
        if self.detector is None or self.model_spec is None:
            return None
        return (self.model_spec.profile, self.detector.sha256)

    # ---- configuration ------------------------------------------------------------------

    def _pipeline(self, camera: CameraConfig) -> CameraPipeline:
        ref = (
            ModelRef(profile=self.model_spec.profile, sha256=self.detector.sha256)
            if self.detector is not None and self.model_spec is not None
            else None
        )
        factory = EventFactory(
            self.node_id,
            next_seq=self.outbox.next_seq,
            to_datetime=wall_clock(),
            publish=self.publish_settings,
            model=ref,
        )
        return CameraPipeline(
            camera,
            detector=self.detector,
            factory=factory,
            publish=self.publish_settings,
            timezone=self.timezone,
        )

    def apply_config(self, config: NodeConfig) -> None:
        """Run `config`: a changed model loads beside the old one and swaps when ready;
        cameras are added, removed or restarted as they changed. Raises ConfigRejected."""
        detector = self.detector
        if config.model != self.model_spec:
            try:
                detector = create_detector(config.model, self.settings.models_path)
            except EdgeError as exc:
                raise ConfigRejected([("model", str(exc))]) from exc
        rebuild_all = (
            detector is not self.detector
            or config.publish != self.publish_settings
            or config.timezone != str(self.timezone)
        )
        self.detector, self.model_spec = detector, config.model
        self.publish_settings = config.publish
        self.timezone = ZoneInfo(config.timezone)
        self.outbox.budget_bytes = config.publish.outbox_budget_mb * MB
        wanted = {camera.camera_id: camera for camera in config.cameras}
        for camera_id in list(self.cameras):
            if (
                camera_id not in wanted
                or rebuild_all
                or wanted[camera_id] != self.cameras[camera_id]
            ):
                self.analyzer.remove_camera(camera_id)
                del self.cameras[camera_id]
        for camera_id, camera in wanted.items():
            if camera_id not in self.cameras:
                self.analyzer.add_camera(self._pipeline(camera))
                self.cameras[camera_id] = camera

    # ---- messages from the cloud ---------------------------------------------------------

    def handle_incoming(self, topic: str, payload: bytes) -> None:
        try:
            parts, message = decode_message(topic, payload)
        except (InvalidTopic, InvalidPayload) as exc:
            if topic == config_desired_topic(self.node_id):
                self.config_manager.handle_desired(payload)  # reports the rejection
            else:
                logger.warning("refused a message on %s: %s", topic, exc)
            return
        if not isinstance(parts, NodeTopic):
            return
        if parts.channel is Channel.CONFIG_DESIRED:
            self.config_manager.handle_desired(payload)
        elif parts.channel is Channel.COMMANDS and isinstance(message, CommandRequest):
            self.send(self.commands.respond(self.commands.handle(message)))
        elif (
            parts.channel is Channel.RECEIPTS
            and isinstance(message, Receipt)
            and message.node_id == self.node_id
        ):
            self.outbox.receipted(message.seqs)

    # ---- running ------------------------------------------------------------------------

    def request_stop(self, *_: object) -> None:
        self._stop.set()

    def run(self) -> int:
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            self.start()
            self.loop()
        finally:
            self.shutdown()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return 0

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        logger.info("signal %d: shutting down node_id=%s", signum, self.node_id)
        self._stop.set()

    def start(self) -> None:
        logger.info(
            "starting node_id=%s broker=%s data_dir=%s",
            self.node_id,
            self.settings.broker_url,
            self.settings.data_dir,
        )
        self.config_manager.load_initial(self.settings.config_file)
        if self.settings.metrics_port:
            start_http_server(self.settings.metrics_port, registry=metrics_registry(self.health))
        self.publisher.start()
        self.link.start()
        self.analyzer.start()

    def loop(self) -> None:
        next_health = time.monotonic() + 1.0  # a first report soon after start
        last_failure: str | None = None
        while not self._stop.is_set():
            if self.link.connect_failed.is_set():
                self.link.connect_failed.clear()
                reason = self.link.diagnose()
                if reason != last_failure:  # once per distinct reason, not per retry
                    logger.warning(
                        "cannot connect to the broker node_id=%s: %s", self.node_id, reason
                    )
                last_failure = reason
            elif self.link.connected.is_set():
                last_failure = None
            timeout = max(0.0, min(0.5, next_health - time.monotonic()))
            try:
                incoming = self.link.incoming.get(timeout=timeout)
                self.handle_incoming(incoming.topic, incoming.payload)
            except queue.Empty:
                pass
            if time.monotonic() >= next_health:
                next_health = time.monotonic() + self.publish_settings.health_interval_s
                self.send(
                    Message(
                        health_topic(self.node_id),
                        encode_message(self.health.snapshot()),
                        Priority.HEALTH,
                    )
                )

    def shutdown(self) -> None:
        """Stop cameras (their open threads end into the outbox), flush what the link takes
        in the time allowed, say offline, and close the outbox."""
        self.analyzer.stop()
        if self.link.connected.is_set():
            self.publisher.flush(self.settings.shutdown_flush_s)
        self.publisher.stop()
        self.link.stop()
        self.outbox.close()
        logger.info("stopped node_id=%s", self.node_id)
