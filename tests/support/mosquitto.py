"""A private Mosquitto on free loopback ports, with the users, ACL and TLS a test chooses."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from pydantic import SecretStr

from cloud.broker import MosquittoConfig, MosquittoProcess
from cloud.broker_sync import BrokerFiles, init_broker, sync_once
from cloud.mqtt import address_of
from tests.support.ports import free_port
from tests.support.tls import CertPair, TestCA

MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"


@dataclass
class BrokerOptions:
    """What the test wants of its broker."""

    users: dict[str, str] = field(default_factory=dict)  # username -> password
    acl: str | None = None  # Mosquitto ACL file text
    port: int | None = None  # default: a free one
    # Files written beforehand (by `broker sync --init`), used as they are.
    password_file: Path | None = None
    dynsec_file: Path | None = None
    tls: bool = False  # a TLS listener (CA + server cert generated) besides plain TCP
    require_certificate: bool = False  # clients on the TLS listener need a CA-signed cert
    persistence: bool = False  # keep sessions and queued messages across restarts
    # How often it saves them: a broker killed (-9) loses what it took since.
    autosave_interval_s: int = 1
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
            port=opts.port or free_port(),
            password_file=opts.password_file,
            dynsec_file=opts.dynsec_file,
            persistence=opts.persistence,
            autosave_interval_s=opts.autosave_interval_s,
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


ADMIN_PASSWORD = "the broker admin's password"
SERVICES = ["ingest.1", "api.1"]


class CountyBroker(MosquittoBroker):
    """A county broker configured exactly as `gridwatch cloud broker sync` configures one:
    `--init` wrote its password file and plugin file before it started; `sync` brings it to
    the registry afterwards, on the plugin's control topic."""

    def __init__(self, directory: Path, database_url: str, files: BrokerFiles) -> None:
        self.files = files
        files.restart = self.restart
        self.database_url = database_url
        dynsec_file = directory / "dynsec.json"
        with psycopg.connect(database_url) as conn:
            init_broker(conn, files, dynsec_file)
        _, port, _ = address_of(files.broker_url)
        super().__init__(
            directory,
            BrokerOptions(port=port, password_file=files.password_file, dynsec_file=dynsec_file),
        )

    def sync(self) -> bool:
        """`broker sync` once; a rewritten password file restarts the broker (files.restart)
        before sync returns, and the plugin's changes are made by then too."""
        with psycopg.connect(self.database_url) as conn:
            return sync_once(conn, self.files)


def county_files(directory: Path, cloud_password: str, **fields: Any) -> BrokerFiles:
    """What `broker sync` is told for a county broker that will listen on a free port."""
    directory.mkdir(parents=True, exist_ok=True)
    fields.setdefault("services", list(SERVICES))
    return BrokerFiles(
        password_file=directory / "passwd",
        pid_file=directory / "mosquitto.pid",
        broker_url=f"mqtt://127.0.0.1:{free_port()}",
        service_password=SecretStr(cloud_password),
        admin_password=SecretStr(ADMIN_PASSWORD),
        **fields,
    )


def county_broker(
    directory: Path, database_url: str, cloud_password: str, **fields: Any
) -> CountyBroker:
    """A county broker for the registry in `database_url` (not started)."""
    return CountyBroker(directory, database_url, county_files(directory, cloud_password, **fields))
