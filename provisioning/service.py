"""The county service as the tool talks to it: the org tree, registration, credentials,
desired config, commissioning, retirement. Every call is bounded in time and retried with
backoff while the failure is passing (the link, a restart, 5xx); an answer that refuses
(4xx) is said as the service said it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import httpx2 as httpx
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from provisioning.errors import ProvisionError
from provisioning.settings import ProvisionSettings

T = TypeVar("T")


class _Passing(Exception):
    """A failure worth another try."""


def _passing(exc: BaseException) -> bool:
    return isinstance(exc, (_Passing, httpx.TransportError))


class CountyService:
    def __init__(self, settings: ProvisionSettings, *, token: str | None = None) -> None:
        self.settings = settings
        bearer = token or (
            settings.cloud_token.get_secret_value() if settings.cloud_token else None
        )
        if bearer is None:
            raise ProvisionError(
                "no credentials for the county service: set PROVISION_CLOUD_TOKEN (an API "
                "token) or sign in with --username"
            )
        self.client = httpx.Client(
            base_url=settings.cloud_url.rstrip("/") + "/api/v1",
            headers={"Authorization": f"Bearer {bearer}"},
            timeout=settings.call_timeout_s,
        )

    @classmethod
    def sign_in(cls, settings: ProvisionSettings, username: str, password: str) -> CountyService:
        response = httpx.post(
            settings.cloud_url.rstrip("/") + "/api/v1/auth/token",
            data={"username": username, "password": password},
            timeout=settings.call_timeout_s,
        )
        if response.status_code != 200:
            raise ProvisionError(f"the county service refused the sign-in of {username}")
        return cls(settings, token=response.json()["access_token"])

    def close(self) -> None:
        self.client.close()

    def _call(self, method: str, path: str, what: str, **kwargs: Any) -> httpx.Response:
        def once() -> httpx.Response:
            response = self.client.request(method, path, **kwargs)
            if response.status_code >= 500 or response.status_code == 429:
                raise _Passing(f"{what}: the service answered {response.status_code}")
            return response

        try:
            response = self._retry(once)
        except httpx.TransportError as exc:
            raise ProvisionError(f"{what}: cannot reach {self.settings.cloud_url}: {exc}") from exc
        except _Passing as exc:
            raise ProvisionError(str(exc)) from exc
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise ProvisionError(f"{what}: {response.status_code} {detail}")
        return response

    def _retry(self, call: Callable[[], T]) -> T:
        for attempt in Retrying(
            retry=retry_if_exception(_passing),
            wait=wait_exponential_jitter(multiplier=0.5, max=30),
            stop=stop_after_attempt(self.settings.attempts),
            reraise=True,
        ):
            with attempt:
                return call()
        raise AssertionError("unreachable")

    # ---- what provisioning does ---------------------------------------------------------

    def units(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self._call("GET", "/org/units", "reading the org tree").json()
        return rows

    def register(self, node_id: str, body: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self._call(
            "PUT", f"/fleet/nodes/{node_id}", f"registering {node_id}", json=body
        ).json()
        return result

    def issue_credentials(self, node_id: str, *, rotate: bool = False) -> str:
        response = self._call(
            "POST",
            f"/nodes/{node_id}/credentials",
            f"credentials for {node_id}",
            params={"rotate": str(rotate).lower()},
        )
        password: str = response.json()["password"]
        return password

    def set_password_hash(self, node_id: str, password_hash: str) -> None:
        self._call(
            "PUT",
            f"/nodes/{node_id}/credentials",
            f"the password of {node_id}",
            json={"password_hash": password_hash},
        )

    def activate_credentials(self, node_id: str) -> None:
        self._call(
            "POST", f"/nodes/{node_id}/credentials/activate", f"activating {node_id}'s password"
        )

    def put_config(self, node_id: str, body: dict[str, Any]) -> int:
        response = self._call(
            "PUT", f"/nodes/{node_id}/config", f"the desired config of {node_id}", json=body
        )
        version: int = response.json()["version"]
        return version

    def commissioning(self, node_id: str, body: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self._call(
            "POST", f"/nodes/{node_id}/commissioning", f"commissioning of {node_id}", json=body
        ).json()
        return result

    def node(self, node_id: str) -> dict[str, Any] | None:
        try:
            result: dict[str, Any] = self._call("GET", f"/nodes/{node_id}", node_id).json()
        except ProvisionError as exc:
            if " 404 " in str(exc):
                return None
            raise
        return result

    def retire(self, node_id: str) -> None:
        self._call("DELETE", f"/fleet/nodes/{node_id}", f"retiring {node_id}")
