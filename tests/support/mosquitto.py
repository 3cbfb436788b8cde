"""A private Mosquitto process on a free loopback port, with the config a test chooses."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.ports import free_port, is_listening, wait_until
from tests.support.tls import CertPair, TestCA

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"


@dataclass
class BrokerOptions:
    """What the test wants of its broker."""

    users: dict[str, str] = field(default_factory=dict)  # username -> password
    acl: str | None = None  # Mosquitto ACL file text
    tls: bool = False  # a TLS listener (CA + server cert generated) besides plain TCP
    require_certificate: bool = False  # clients on the TLS listener need a CA-signed cert
    persistence: bool = False  # keep sessions and queued messages across restarts
    # Mosquitto's defaults (20 in flight, 1,000 queued per client) throttle a manual-ack
    # ingest to a crawl and drop QoS 1 messages queued for a session beyond 1,000: a county
    # broker needs these raised, and so do the tests.
    max_inflight_messages: int = 10_000
    max_queued_messages: int = 1_000_000
    extra: list[str] = field(default_factory=list)  # more config lines


class MosquittoBroker:
    """One mosquitto process. `port` is plain MQTT; `tls_port` is MQTT over TLS when asked."""

    def __init__(self, directory: Path, options: BrokerOptions | None = None) -> None:
        if not Path(MOSQUITTO).exists():
            raise RuntimeError(
                f"mosquitto not found at {MOSQUITTO}: install it with "
                "`apt-get install mosquitto` (make services does this as root)"
            )
        self.directory = directory
        self.options = options or BrokerOptions()
        self.port = free_port()
        self.tls_port = free_port() if self.options.tls else None
        self.ca: TestCA | None = TestCA(directory) if self.options.tls else None
        self.server_cert: CertPair | None = (
            self.ca.issue("server", "localhost", server=True) if self.ca else None
        )
        self.config_path = directory / "mosquitto.conf"
        self.log_path = directory / "mosquitto.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._write_config()

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def _write_config(self) -> None:
        opts = self.options
        lines = [f"listener {self.port} 127.0.0.1"]
        if os.geteuid() == 0:
            lines.insert(0, "user root")  # else mosquitto drops to a user who cannot read tmp
        anonymous = not opts.users
        lines.append(f"allow_anonymous {'true' if anonymous else 'false'}")
        if opts.users:
            passwd = self.directory / "passwd"
            passwd.write_text("")
            for username, password in opts.users.items():
                subprocess.run(
                    [MOSQUITTO_PASSWD, "-b", str(passwd), username, password],
                    check=True,
                    capture_output=True,
                )
            lines.append(f"password_file {passwd}")
        if opts.acl is not None:
            acl = self.directory / "acl"
            acl.write_text(opts.acl)
            lines.append(f"acl_file {acl}")
        if self.tls_port is not None and self.ca and self.server_cert:
            lines += [
                f"listener {self.tls_port} 127.0.0.1",
                f"cafile {self.ca.pair.cert}",
                f"certfile {self.server_cert.cert}",
                f"keyfile {self.server_cert.key}",
                f"require_certificate {'true' if opts.require_certificate else 'false'}",
            ]
            if opts.require_certificate:
                lines.append("use_identity_as_username true")
        if opts.persistence:
            lines += [
                "persistence true",
                f"persistence_location {self.directory}/",
                "autosave_interval 1",
            ]
        else:
            lines.append("persistence false")
        lines += [
            f"max_inflight_messages {opts.max_inflight_messages}",
            f"max_queued_messages {opts.max_queued_messages}",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            *opts.extra,
        ]
        # Listener-scoped options above follow their `listener`; global options may come
        # anywhere in Mosquitto 2.0 when per_listener_settings is false (the default).
        self.config_path.write_text("\n".join(lines) + "\n")

    def start(self, timeout_s: float = 10.0) -> MosquittoBroker:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.config_path)],
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        log.close()

        def ready() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"mosquitto exited at start:\n{self.log()}")
            return is_listening(self.port) and (
                self.tls_port is None or is_listening(self.tls_port)
            )

        wait_until(ready, timeout_s, f"mosquitto on 127.0.0.1:{self.port}")
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
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
        """Stop abruptly (SIGKILL), as a crash or power cut would."""
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
            self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def reload(self) -> None:
        """SIGHUP: Mosquitto re-reads its password and ACL files."""
        assert self.process is not None
        self.process.send_signal(signal.SIGHUP)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
