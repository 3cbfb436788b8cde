"""Registering boxes in a balena fleet through balena-sdk 17.3.0, around its known traps
(../shared/reference/balena-sdk.md §1.5):

- its calls have no timeout: each runs in a worker thread and is abandoned after
  `call_timeout_s`, so the tool never hangs on a dead link; it is not retried until the
  abandoned try has ended, so a late request never lands after the steps that follow it;

- 429: the SDK's own retry is unbounded and its non-OData helpers never retry: every call
  here is retried with capped backoff, a bounded number of times, and `/device/register`
  (called directly) waits what `Retry-After` says; a client-side limit keeps us under it;
- `device.register()` mints a nameless, non-expiring provisioning key per call and some
  helpers return an error body as if it were the answer: boxes are pre-registered with one
  named, expiring key per technician (kept until it expires), and every answer is checked;
- lookups by uuid cost a round-trip each: devices are addressed by numeric id.

A box is found again by its deterministic name, so a run that stopped half-way continues
with the same device instead of making a second one.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import requests
from balena import Balena, __version__
from balena.auth import Auth
from balena.exceptions import RequestError
from balena.models import Models
from balena.pine import PineClient
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from provisioning.errors import ProvisionError
from provisioning.plans import BoxPlan
from provisioning.settings import ProvisionSettings

logger = logging.getLogger(__name__)

T = TypeVar("T")
# Variables every box of a fleet shares: set on the fleet, not on each device.
SHARED = {"EDGE_BROKER_URL", "EDGE_CLOUD_URL"}
# What a provisioning key looks like; anything else is an error body the SDK passed on.
_KEY = re.compile(r"^[A-Za-z0-9_-]{16,128}$")


class _RateLimited(Exception):
    def __init__(self, wait_s: float) -> None:
        super().__init__(f"rate limited for {wait_s:g} s")
        self.wait_s = wait_s


def _passing(exc: BaseException) -> bool:
    if isinstance(exc, RequestError):
        status = int(exc.status_code)
        return status == 429 or status >= 500
    return isinstance(
        exc, (_RateLimited, requests.ConnectionError, requests.Timeout, FutureTimeout)
    )


@dataclass(frozen=True)
class Device:
    id: int
    uuid: str
    name: str


class BalenaFleet:
    """One fleet, as the technician's named user API key sees it."""

    name = "balena"

    def __init__(self, settings: ProvisionSettings) -> None:
        if settings.balena_token is None or settings.balena_fleet is None:
            raise ProvisionError(
                "the balena backend needs PROVISION_BALENA_TOKEN (a named API key) and "
                "PROVISION_BALENA_FLEET (org/fleet)"
            )
        self.settings = settings
        self.fleet = settings.balena_fleet
        self.api_url = settings.balena_api_url.rstrip("/") + "/"
        sdk = Balena({"data_directory": False, "retry_rate_limited_request": False})
        sdk.settings.set("api_endpoint", self.api_url)
        sdk.settings.set("request_limit", str(settings.balena_requests_per_minute))
        sdk.settings.set("request_limit_interval", "60")
        # The SDK reads the endpoint once when its clients are made: make them again.
        sdk.pine = PineClient(sdk.settings, __version__)
        sdk.auth = Auth(sdk.pine, sdk.settings)
        sdk.models = Models(sdk.pine, sdk.settings)
        sdk.auth.login_with_token(settings.balena_token.get_secret_value())
        self.sdk = sdk
        # Calls are submitted here only from outside it (never from a call running in it),
        # so a full pool cannot wait on itself.
        self._pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix="balena")
        self._fleet: dict[str, Any] | None = None
        self._key_lock = threading.Lock()
        self.calls = 0

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # ---- every call: bounded in time, retried while passing ------------------------------

    def _call(self, what: str, fn: Callable[..., T], *args: Any) -> T:
        abandoned: list[Future[T]] = []

        def once() -> T:
            # An attempt given up at its timeout is still on its way: a retry sent beside
            # it could land first and then be undone by it (a password set back after the
            # next step removed its twin). The next attempt waits for it to end.
            while abandoned:
                try:
                    abandoned[-1].exception(timeout=self.settings.call_timeout_s)
                except FutureTimeout:
                    raise ProvisionError(
                        f"balena: {what}: an earlier try is still unanswered after "
                        f"{2 * self.settings.call_timeout_s:g} s; not sent again beside it"
                    ) from None
                abandoned.pop()
            self.calls += 1
            future = self._pool.submit(fn, *args)
            try:
                return future.result(timeout=self.settings.call_timeout_s)
            except FutureTimeout:
                abandoned.append(future)
                raise

        def wait(state: Any) -> float:
            exc = state.outcome.exception() if state.outcome else None
            if isinstance(exc, _RateLimited):
                return exc.wait_s
            return float(wait_exponential_jitter(multiplier=1, max=60)(state))

        try:
            for attempt in Retrying(
                retry=retry_if_exception(_passing),
                wait=wait,
                stop=stop_after_attempt(self.settings.attempts),
                reraise=True,
            ):
                with attempt:
                    return once()
        except FutureTimeout as exc:
            raise ProvisionError(
                f"balena: {what}: no answer in {self.settings.call_timeout_s:g} s"
            ) from exc
        except RequestError as exc:
            raise ProvisionError(f"balena: {what}: HTTP {exc.status_code}: {exc.message}") from exc
        except (_RateLimited, requests.RequestException) as exc:
            raise ProvisionError(f"balena: {what}: {exc}") from exc
        raise AssertionError("unreachable")

    # ---- the fleet and the technician's provisioning key ---------------------------------

    def fleet_row(self) -> dict[str, Any]:
        if self._fleet is None:
            row = self._call(
                f"fleet {self.fleet}",
                self.sdk.models.application.get,
                self.fleet,
                {
                    "$select": ["id", "slug"],
                    "$expand": {"is_for__device_type": {"$select": "slug"}},
                },
            )
            types = row.get("is_for__device_type")
            if not isinstance(types, list) or not types or "slug" not in types[0]:
                raise ProvisionError(f"balena: fleet {self.fleet}: no device type in the answer")
            self._fleet = {"id": int(row["id"]), "device_type": str(types[0]["slug"])}
        return self._fleet

    def provisioning_key(self) -> str:
        """The technician's named key for this fleet, made once and kept until it expires
        (not one anonymous key per box, as the SDK's register would)."""
        with self._key_lock:
            path = self.settings.state_dir / "balena-keys.json"
            keys = json.loads(path.read_text()) if path.exists() else {}
            cached = keys.get(self.fleet)
            now = datetime.now(UTC)
            if cached and datetime.fromisoformat(cached["expires"]) > now + timedelta(hours=1):
                return str(cached["key"])
            expires = now + timedelta(days=self.settings.balena_key_days)
            name = f"gridwatch-{self.settings.technician}-{now:%Y%m%d}"
            key = self._call(
                "a provisioning key",
                self.sdk.models.application.generate_provisioning_key,
                self.fleet,
                name,
                f"gridwatch provisioning by {self.settings.technician}",
                expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
            )
            if not isinstance(key, str) or not _KEY.match(key):
                raise ProvisionError(f"balena: a provisioning key: unexpected answer {key!r:.80}")
            keys[self.fleet] = {"key": key, "name": name, "expires": expires.isoformat()}
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(keys))
            path.chmod(0o600)
            return key

    def share(self, env: dict[str, str]) -> dict[str, str]:
        """Broker and service URLs as fleet variables (one write for the whole fleet, and a
        changed URL is changed once); the rest stays per device."""
        shared = {k: v for k, v in env.items() if k in SHARED}
        for name, value in sorted(shared.items()):
            self._call(
                f"fleet variable {name}",
                self.sdk.models.application.env_var.set,
                self.fleet,
                name,
                value,
            )
        return {k: v for k, v in env.items() if k not in SHARED}

    # ---- devices -------------------------------------------------------------------------

    def find(self, name: str) -> Device | None:
        rows = self._call(
            f"looking up {name}",
            self.sdk.models.device.get_all_by_application,
            self.fleet,
            {"$select": ["id", "uuid", "device_name"], "$filter": {"device_name": name}},
        )
        if not isinstance(rows, list):
            raise ProvisionError(f"balena: looking up {name}: unexpected answer {rows!r:.80}")
        if len(rows) > 1:
            raise ProvisionError(
                f"balena: {len(rows)} devices are named {name} in {self.fleet}; "
                "remove the extra ones"
            )
        return Device(int(rows[0]["id"]), str(rows[0]["uuid"]), name) if rows else None

    def _register(self, uuid: str, fleet: dict[str, Any], key: str) -> dict[str, Any]:
        """POST /device/register with the named key (the SDK would mint a key per box). Runs
        in a worker of `_call`: it calls nothing that waits on another worker."""
        response = requests.post(
            self.api_url + "device/register",
            json={"application": fleet["id"], "device_type": fleet["device_type"], "uuid": uuid},
            headers={
                "Authorization": f"Bearer {key}",
                "X-Balena-Client": f"gridwatch-provision (balena-python-sdk/{__version__})",
            },
            timeout=self.settings.call_timeout_s,
        )
        if response.status_code == 429:
            retry_after = response.headers.get("Retry-After", "")
            raise _RateLimited(float(retry_after) if retry_after.isdigit() else 5.0)
        if response.status_code >= 500:
            raise RequestError(body=response.text, status_code=response.status_code)
        if response.status_code == 409:
            raise ProvisionError(f"balena: device uuid {uuid} exists already ({response.text})")
        if response.status_code != 201:
            raise ProvisionError(
                f"balena: registering a device: HTTP {response.status_code}: {response.text[:200]}"
            )
        body = response.json()
        if (
            not isinstance(body, dict)
            or body.get("uuid") != uuid
            or not isinstance(body.get("id"), int)
        ):
            raise ProvisionError(f"balena: registering a device: unexpected answer {body!r:.120}")
        return body

    def register(self, plan: BoxPlan, env: dict[str, str]) -> str:
        """The box pre-registered (or found again), named, tagged, its variables set; its
        uuid. Safe to run again: nothing is made twice."""
        device = self.find(plan.device_name)
        if device is None:
            uuid = secrets.token_hex(16)
            fleet, key = self.fleet_row(), self.provisioning_key()
            made = self._call(f"registering {plan.device_name}", self._register, uuid, fleet, key)
            device = Device(int(made["id"]), uuid, plan.device_name)
            self._call(f"naming {uuid}", self.sdk.models.device.rename, device.id, plan.device_name)
            logger.info("balena device registered name=%s uuid=%s", plan.device_name, uuid)
        for key, value in sorted(plan.tags.items()):
            self._call(
                f"tag {key} of {plan.device_name}",
                self.sdk.models.device.tags.set,
                device.id,
                key,
                value,
            )
        for name, value in sorted(env.items()):
            self._call(
                f"variable {name} of {plan.device_name}",
                self.sdk.models.device.env_var.set,
                device.id,
                name,
                value,
            )
        return device.uuid

    def set_env(self, device_name: str, env: dict[str, str]) -> None:
        device = self.find(device_name)
        if device is None:
            raise ProvisionError(f"balena: no device named {device_name} in {self.fleet}")
        for name, value in sorted(env.items()):
            self._call(
                f"variable {name}", self.sdk.models.device.env_var.set, device.id, name, value
            )

    def remove_env(self, device_name: str, names: list[str]) -> None:
        device = self.find(device_name)
        if device is None:
            raise ProvisionError(f"balena: no device named {device_name} in {self.fleet}")
        for name in names:
            self._call(
                f"removing variable {name}", self.sdk.models.device.env_var.remove, device.id, name
            )

    def remove(self, device_name: str) -> bool:
        device = self.find(device_name)
        if device is None:
            return False
        self._call(f"removing {device_name}", self.sdk.models.device.remove, device.uuid)
        return True
