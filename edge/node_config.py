"""Desired config from the cloud: validate, apply without a restart, keep the last good one
on disk, and report what was done. An invalid config never takes the node down."""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

from edge.outbox import Message, Priority
from protocols import ConfigFieldError, ConfigReport, InvalidPayload, NodeConfig, decode, encode
from protocols.base import utc_now
from protocols.enums import ConfigStatus
from protocols.topics import config_desired_topic, config_reported_topic

logger = logging.getLogger(__name__)


class ConfigRejected(Exception):
    """A config the node cannot run; `problems` are (field, message) pairs."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{f}: {m}" for f, m in problems))


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


class ConfigManager:
    """Holds the running config; `apply` (the agent's) raises ConfigRejected to refuse."""

    def __init__(
        self,
        node_id: str,
        store: Path,
        *,
        apply: Callable[[NodeConfig], None],
        send: Callable[[Message], None],
    ) -> None:
        self.node_id = node_id
        self.store = store
        self.apply = apply
        self.send = send
        self.running: NodeConfig | None = None
        self.last_desired: bytes | None = None
        self._lock = threading.Lock()

    def load_initial(self, first_boot: Path | None) -> NodeConfig | None:
        """The last good config, else the first-boot file; applied, not yet reported."""
        for path in (self.store, first_boot):
            if path is None or not path.is_file():
                continue
            try:
                config = decode(NodeConfig, path.read_bytes(), topic=str(path))
            except InvalidPayload as exc:
                logger.error("config file %s is invalid: %s", path, exc)
                continue
            if config.node_id != self.node_id:
                logger.error(
                    "config file %s is for node %s, not %s", path, config.node_id, self.node_id
                )
                continue
            try:
                self.apply(config)
            except ConfigRejected as exc:
                logger.error("config file %s cannot run: %s", path, exc)
                continue
            self.running = config
            logger.info("running config version=%d from %s", config.version, path)
            return config
        return None

    def handle_desired(self, raw: bytes) -> ConfigReport:
        """A message from config/desired: apply it if it is valid and newer."""
        with self._lock:
            self.last_desired = raw
            return self._handle(raw)

    def reload(self) -> int | None:
        """Apply the last desired config again (the reload_config command)."""
        with self._lock:
            if self.last_desired is None:
                return self.running.version if self.running else None
            running = self.running
            self.running = None  # so the same version is applied again
            report = self._handle(self.last_desired)
            if report.status is ConfigStatus.REJECTED:
                self.running = running
            return report.version

    def _handle(self, raw: bytes) -> ConfigReport:
        topic = config_desired_topic(self.node_id)
        try:
            config = decode(NodeConfig, raw, topic=topic, max_bytes=1024 * 1024)
        except InvalidPayload as exc:
            version = _version_of(raw)
            return self._report(version, ConfigStatus.REJECTED, exc.problems)
        if config.node_id != self.node_id:
            return self._report(
                config.version,
                ConfigStatus.REJECTED,
                [("node_id", f"config is for node {config.node_id}")],
            )
        running = self.running
        if running is not None and config.version < running.version:
            return self._report(
                config.version,
                ConfigStatus.REJECTED,
                [
                    (
                        "version",
                        f"older than the running version {running.version}; "
                        "publish a higher version to roll back",
                    )
                ],
            )
        if running is not None and config.version == running.version:
            return self._report(config.version, ConfigStatus.APPLIED, [])
        try:
            self.apply(config)
        except ConfigRejected as exc:
            logger.warning("config rejected version=%d: %s", config.version, exc)
            return self._report(config.version, ConfigStatus.REJECTED, exc.problems)
        _write_atomically(self.store, encode(config))
        self.running = config
        logger.info("config applied version=%d cameras=%d", config.version, len(config.cameras))
        return self._report(config.version, ConfigStatus.APPLIED, [])

    def _report(
        self, version: int, status: ConfigStatus, problems: list[tuple[str, str]]
    ) -> ConfigReport:
        report = ConfigReport(
            node_id=self.node_id,
            version=max(1, version),
            status=status,
            running_version=self.running.version if self.running else None,
            reported_at=utc_now(),
            errors=[ConfigFieldError(field=f[:256], message=m[:1024]) for f, m in problems[:64]],
        )
        self.send(
            Message(
                config_reported_topic(self.node_id), encode(report), Priority.CONTROL, retain=True
            )
        )
        return report


def _version_of(raw: bytes) -> int:
    """The version a broken config claims, for its rejection report."""
    try:
        value = json.loads(raw).get("version")
    except (ValueError, AttributeError):
        return 1
    return value if isinstance(value, int) and 1 <= value < 2**31 else 1
