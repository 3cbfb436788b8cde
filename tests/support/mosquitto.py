"""A private Mosquitto on free loopback ports, with the users, ACL and TLS a test chooses."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from pydantic import SecretStr

from cloud.broker import MosquittoConfig, MosquittoProcess
from cloud.broker_sync import BrokerFiles, sync_once
from tests.support.ports import free_port, wait_until
from tests.support.tls import CertPair, TestCA

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


class MosquittoBroker(MosquittoProcess):
    """The product's broker runner on free loopback ports, with users, ACL and TLS material
    made for the test. `port` is plain MQTT; `tls_port` is MQTT over TLS when asked."""

    def __init__(self, directory: Path, options: BrokerOptions | None = None) -> None:
        self.directory = directory
        self.options = opts = options or BrokerOptions()
        self.ca: TestCA | None = TestCA(directory) if opts.tls else None
        self.server_cert: CertPair | None = (
            self.ca.issue("server", "localhost", server=True) if self.ca else None
        )
        config = MosquittoConfig(
            directory=directory,
            port=free_port(),
            persistence=opts.persistence,
            autosave_interval_s=1,
            max_inflight_messages=opts.max_inflight_messages,
            max_queued_messages=opts.max_queued_messages,
            log_connections=True,
            extra=opts.extra,
        )
        if opts.users:
            config.password_file = directory / "passwd"
            config.password_file.write_text("")
            for username, password in opts.users.items():
                subprocess.run(
                    [MOSQUITTO_PASSWD, "-b", str(config.password_file), username, password],
                    check=True,
                    capture_output=True,
                )
        if opts.acl is not None:
            config.acl_file = directory / "acl"
            config.acl_file.write_text(opts.acl)
        if self.ca and self.server_cert:
            config.tls_port = free_port()
            config.cafile = self.ca.pair.cert
            config.certfile = self.server_cert.cert
            config.keyfile = self.server_cert.key
            config.require_certificate = opts.require_certificate
        super().__init__(config)

    @property
    def port(self) -> int:
        return self.config.port

    @property
    def tls_port(self) -> int | None:
        return self.config.tls_port

    def restart(self) -> None:
        self.stop()
        self.start()


def registry_broker(directory: Path) -> MosquittoBroker:
    """A county broker whose password and ACL files only `broker sync` writes (a placeholder
    account until the first sync)."""
    return MosquittoBroker(
        directory, BrokerOptions(users={"placeholder": "unused"}, acl="# empty\n")
    )


def registry_files(broker: MosquittoBroker, cloud_password: str) -> BrokerFiles:
    """What `gridwatch cloud broker sync` writes for `broker`, and where its pid is."""
    assert broker.config.password_file is not None
    assert broker.config.acl_file is not None
    return BrokerFiles(
        password_file=broker.config.password_file,
        acl_file=broker.config.acl_file,
        pid_file=broker.config.directory / "mosquitto.pid",
        cloud_password=SecretStr(cloud_password),
    )


def sync_registry(database_url: str, broker: MosquittoBroker, cloud_password: str) -> bool:
    """`broker sync` once; when it wrote, wait until the broker has reloaded the files."""
    reloads = broker.log().count("Reloading config")
    with psycopg.connect(database_url) as conn:
        changed = sync_once(conn, registry_files(broker, cloud_password))
    if changed:
        wait_until(
            lambda: broker.log().count("Reloading config") > reloads, 10, "the broker's reload"
        )
    return changed
