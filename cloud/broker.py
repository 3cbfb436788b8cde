"""The county's Mosquitto: the config it needs, and a process runner for the embedded broker
of `serve` (and the private brokers of the tests)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from cloud.broker_dynsec import PLUGIN
from cloud.errors import ServiceUnavailable
from protocols.catalog import max_packet_bytes

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def is_listening(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass
class MosquittoConfig:
    """One broker's settings; `render()` gives its mosquitto.conf."""

    directory: Path  # persistence, pid file
    port: int
    bind: str = "127.0.0.1"
    password_file: Path | None = None  # None: anonymous clients allowed
    # The dynamic-security plugin's file (see cloud/broker_dynsec.py): with it, every
    # account is bound to its client id and a SUBSCRIBE it may not make is refused.
    dynsec_file: Path | None = None
    # The older mechanism: it grants every SUBSCRIBE and filters only at delivery.
    acl_file: Path | None = None
    tls_port: int | None = None
    cafile: Path | None = None
    certfile: Path | None = None
    keyfile: Path | None = None
    require_certificate: bool = False  # TLS clients need a CA-signed certificate
    persistence: bool = True
    autosave_interval_s: int = 10
    # Mosquitto's defaults (20 in flight, 1,000 queued per client) throttle a manual-ack
    # ingest to a crawl and drop QoS 1 messages queued for a session beyond 1,000.
    max_inflight_messages: int = 10_000
    max_queued_messages: int = 1_000_000
    # Nothing larger than the protocol allows gets in (the sender is disconnected).
    max_packet_size: int = field(default_factory=max_packet_bytes)
    log_connections: bool = False
    extra: list[str] = field(default_factory=list)  # more config lines

    def render(self) -> str:
        lines = [f"pid_file {self.directory / 'mosquitto.pid'}"]
        if os.geteuid() == 0:
            lines.append("user root")  # else it drops to a user who cannot write the directory
        lines += [
            f"listener {self.port} {self.bind}",
            f"allow_anonymous {'false' if self.password_file or self.dynsec_file else 'true'}",
        ]
        if self.password_file is not None:
            lines.append(f"password_file {self.password_file}")
        if self.dynsec_file is not None:
            lines += [f"plugin {PLUGIN}", f"plugin_opt_config_file {self.dynsec_file}"]
        if self.acl_file is not None:
            lines.append(f"acl_file {self.acl_file}")
        if self.tls_port is not None:
            lines += [
                f"listener {self.tls_port} {self.bind}",
                f"cafile {self.cafile}",
                f"certfile {self.certfile}",
                f"keyfile {self.keyfile}",
                f"require_certificate {'true' if self.require_certificate else 'false'}",
            ]
            if self.require_certificate:
                lines.append("use_identity_as_username true")
        if self.persistence:
            lines += [
                "persistence true",
                f"persistence_location {self.directory}/",
                f"autosave_interval {self.autosave_interval_s}",
            ]
        else:
            lines.append("persistence false")
        lines += [
            f"max_inflight_messages {self.max_inflight_messages}",
            f"max_queued_messages {self.max_queued_messages}",
            f"max_packet_size {self.max_packet_size}",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
        ]
        if self.log_connections:
            lines += ["log_type information", "connection_messages true"]
        # Listener-scoped options above follow their `listener`; global ones may come anywhere
        # in Mosquitto 2.0 while per_listener_settings is false (the default).
        return "\n".join([*lines, *self.extra]) + "\n"


class MosquittoProcess:
    """A mosquitto process run from a `MosquittoConfig`, logging to directory/mosquitto.log."""

    def __init__(self, config: MosquittoConfig) -> None:
        if not Path(MOSQUITTO).exists():
            raise ServiceUnavailable(
                "Mosquitto is not installed (Debian: apt-get install mosquitto); or point the "
                "service at a broker with CLOUD_BROKER_URL"
            )
        self.config = config
        self.config_path = config.directory / "mosquitto.conf"
        self.log_path = config.directory / "mosquitto.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.config.bind}:{self.config.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self, timeout_s: float = 10.0) -> MosquittoProcess:
        self.config.directory.mkdir(parents=True, exist_ok=True)
        stop_stale(self.config.directory / "mosquitto.pid")
        self.config_path.write_text(self.config.render())
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [MOSQUITTO, "-c", str(self.config_path)],
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        ports = [p for p in (self.config.port, self.config.tls_port) if p is not None]
        deadline = time.monotonic() + timeout_s
        while not all(is_listening(p, self.config.bind) for p in ports):
            if self.process.poll() is not None:
                raise ServiceUnavailable(f"mosquitto exited at start:\n{self.log()}")
            if time.monotonic() > deadline:
                self.kill()
                raise ServiceUnavailable(f"mosquitto not listening in {timeout_s} s:\n{self.log()}")
            time.sleep(0.02)  # polling for the listener, bounded by the deadline
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM: Mosquitto saves its persistence file and exits."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout_s)
        self.process = None

    def kill(self) -> None:
        """SIGKILL, as a crash or a power cut would."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None

    def restart(self) -> None:
        """Stop (its persistence saved) and start again: Mosquitto reads its password file
        only at start. (Not SIGHUP: Mosquitto 2.0.11 re-checks every session on a reload,
        adds an offline one to its session-expiry list a second time, and crashes on the
        freed entry once that client returns (upstream PR #3341).)"""
        self.stop()
        self.start()


def stop_stale(pid_file: Path) -> None:
    """Stop a broker left running on this directory by a killed parent: it holds the
    persistence file that a new one is about to load."""
    try:
        pid = int(pid_file.read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return
    if b"mosquitto" in cmdline and str(pid_file.parent).encode() in cmdline:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)  # waiting for it to save and exit, bounded by the deadline


def alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie, exited but not reaped by its parent, does not)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status
