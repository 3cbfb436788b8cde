"""Provisioning one box, step by step, each step safe to run again: registered in the
county's registry, given its own broker account, registered in the balena fleet (or not:
standalone), given its desired config. Offline, the same box is written to a bundle for a
USB stick or SD card, and its registration waits in the bundle until `push`."""

from __future__ import annotations

import csv
import json
import logging
import shutil
import threading
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Protocol

from protocols.passwords import hash_password, new_password
from provisioning.errors import ProvisionError
from provisioning.plans import BoxPlan
from provisioning.service import CountyService
from provisioning.settings import ProvisionSettings

logger = logging.getLogger(__name__)

ENV_FILE = "gridwatch.env"
CONFIG_FILE = "config.json"
CA_FILE = "ca.pem"
PENDING_FILE = "registration.json"  # what `push` sends once there is a link


class Registrar(Protocol):
    """Where a box is registered besides the county's registry."""

    name: str

    def share(self, env: dict[str, str]) -> dict[str, str]:
        """Set what every box shares where the fleet keeps it; return what each box still
        needs of `env` itself."""
        ...

    def register(self, plan: BoxPlan, env: dict[str, str]) -> str | None: ...

    def remove(self, device_name: str) -> bool: ...


class Standalone:
    """No fleet manager: the county's registry is the only one; variables go in a bundle."""

    name = "standalone"

    def share(self, env: dict[str, str]) -> dict[str, str]:
        return env  # no fleet: each box's bundle holds everything

    def register(self, plan: BoxPlan, env: dict[str, str]) -> str | None:
        return None

    def remove(self, device_name: str) -> bool:
        return False


@dataclass
class Outcome:
    node_id: str
    device_name: str
    unit_code: str
    backend: str
    status: str  # done | bundled | failed
    balena_uuid: str = ""
    config_version: int | str = ""
    bundle: str = ""
    error: str = ""


RESULT_COLUMNS = [f.name for f in fields(Outcome)]


def shared_env(settings: ProvisionSettings) -> dict[str, str]:
    """What every box of the county shares: where the broker and the service are."""
    return {"EDGE_BROKER_URL": settings.broker_url, "EDGE_CLOUD_URL": settings.cloud_url}


def node_env(settings: ProvisionSettings, plan: BoxPlan, password: str) -> dict[str, str]:
    """The agent's variables: its identity, its broker account and where things are."""
    return {"EDGE_NODE_ID": plan.node_id, "EDGE_PASSWORD": password, **shared_env(settings)}


def write_bundle(
    directory: Path, settings: ProvisionSettings, plan: BoxPlan, password: str, *, pending: bool
) -> Path:
    """A folder the agent reads at first boot (EDGE_BUNDLE_DIR): its variables, its first
    config, the county CA; with `pending`, also what the county must be told once online."""
    target = directory / plan.node_id
    target.mkdir(parents=True, exist_ok=True)
    env = node_env(settings, plan, password)
    env["EDGE_CONFIG_FILE"] = CONFIG_FILE  # relative: resolved against the bundle on the box
    if settings.ca_file is not None:
        shutil.copyfile(settings.ca_file, target / CA_FILE)
        env["EDGE_CA_FILE"] = CA_FILE
    lines = [f"{k}={json.dumps(v)}" for k, v in sorted(env.items())]
    (target / ENV_FILE).write_text(
        "# gridwatch box " + plan.node_id + "\n" + "\n".join(lines) + "\n"
    )
    (target / CONFIG_FILE).write_text(plan.config.model_dump_json(indent=2))
    if pending:
        (target / PENDING_FILE).write_text(
            json.dumps(
                {
                    "node_id": plan.node_id,
                    "registration": plan.registration(),
                    "password_hash": hash_password(password),
                    "config": plan.desired_config(),
                },
                indent=2,
                ensure_ascii=False,
            )
        )
    for path in target.iterdir():
        path.chmod(0o600)  # a password is in there
    return target


class Provisioner:
    def __init__(
        self,
        settings: ProvisionSettings,
        service: CountyService,
        registrar: Registrar,
        bundle_dir: Path | None = None,
    ) -> None:
        self.settings = settings
        self.service = service
        self.registrar = registrar
        self.bundle_dir = bundle_dir
        self._own: set[str] | None = None  # variable names each box needs of its own
        self._share_lock = threading.Lock()

    def _own_env(self, env: dict[str, str]) -> dict[str, str]:
        """The box's variables minus those the fleet holds (set once, on the first box)."""
        with self._share_lock:
            if self._own is None:
                self._own = set(self.registrar.share(dict(env)))
        return {k: v for k, v in env.items() if k in self._own}

    def provision(self, plan: BoxPlan) -> Outcome:
        outcome = Outcome(
            plan.node_id, plan.device_name, plan.unit_code, self.registrar.name, "failed"
        )
        try:
            self.service.register(plan.node_id, plan.registration())
            password = self.service.issue_credentials(plan.node_id)
            uuid = self.registrar.register(
                plan, self._own_env(node_env(self.settings, plan, password))
            )
            if uuid is not None:
                self.service.register(plan.node_id, plan.registration(balena_uuid=uuid))
                outcome.balena_uuid = uuid
            outcome.config_version = self.service.put_config(plan.node_id, plan.desired_config())
            if self.bundle_dir is not None:
                target = write_bundle(self.bundle_dir, self.settings, plan, password, pending=False)
                outcome.bundle = str(target)
            outcome.status = "done"
        except ProvisionError as exc:
            outcome.error = str(exc)
        return outcome


def bundle_offline(settings: ProvisionSettings, plan: BoxPlan, directory: Path) -> Outcome:
    """No link: the password is made here (only its hash will reach the county) and the
    registration waits in the bundle for `push`."""
    target = write_bundle(directory, settings, plan, new_password(), pending=True)
    return Outcome(
        plan.node_id, plan.device_name, plan.unit_code, "offline", "bundled", bundle=str(target)
    )


def push_pending(service: CountyService, bundle: Path) -> Outcome:
    """Tell the county what an offline bundle holds: registration, password hash, config."""
    pending = json.loads((bundle / PENDING_FILE).read_text())
    node_id = pending["node_id"]
    registration = pending["registration"]
    outcome = Outcome(
        node_id, registration.get("name") or "", registration["unit_code"], "offline", "failed"
    )
    try:
        service.register(node_id, registration)
        service.set_password_hash(node_id, pending["password_hash"])
        outcome.config_version = service.put_config(node_id, pending["config"])
        (bundle / PENDING_FILE).unlink()
        outcome.status = "done"
    except ProvisionError as exc:
        outcome.error = str(exc)
    return outcome


# ---- the result file: also the journal that makes a bulk run resumable -----------------


def done_before(result_file: Path) -> set[str]:
    """Node ids a previous run finished (its result file), to be skipped this time."""
    if not result_file.exists():
        return set()
    with result_file.open(newline="", encoding="utf-8") as handle:
        return {row["node_id"] for row in csv.DictReader(handle) if row.get("status") == "done"}


class ResultWriter:
    """Appends each outcome as soon as it is known (an interrupted run keeps them)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        fresh = not path.exists() or path.stat().st_size == 0
        self.handle = path.open("a", newline="", encoding="utf-8")
        self.writer = csv.DictWriter(self.handle, fieldnames=RESULT_COLUMNS)
        if fresh:
            self.writer.writeheader()

    def write(self, outcome: Outcome) -> None:
        self.writer.writerow(asdict(outcome))
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()


def summary(outcomes: Iterable[Outcome]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
    return counts
