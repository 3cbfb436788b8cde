"""`gridwatch alerts tail`: the reference grid-app client. It signs in, follows the live
alert stream of its jurisdiction, resumes after a dropped connection (or a restart) from
the last alert it printed, and can acknowledge what arrives.

What an app developer copies: sign in at /api/v1/auth/token (or use an API token), open
/api/v1/alerts/ws with `after` = the last alert id you handled, keep that id durable,
reconnect with backoff, and acknowledge with POST /api/v1/alerts/{id}/ack.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import typer
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential_jitter
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

app = typer.Typer(help="Follow alerts as a grid app does.", no_args_is_help=True)

SIGNED_OUT = 4401  # the stream's close code when the token expired or was revoked
UNKNOWN_AFTER = 4404  # ... when it does not know the resume point asked for


@app.callback()
def main() -> None:
    """Follow alerts as a grid app does: live, resumed, acknowledged."""


class SignInFailed(Exception):
    """The service refused the credentials."""


# The longest `tail` waits, at a time, for a service that says "try again" (429, 503).
MAX_SIGN_IN_WAIT_S = 300


def sign_in(url: str, username: str, password: str) -> str:
    """An access token; a "try again later" (too many sign-ins at once from this address,
    a lockout, the database away) is waited out as the answer's Retry-After says."""
    body = urllib.parse.urlencode({"username": username, "password": password}).encode()
    while True:
        request = urllib.request.Request(  # noqa: S310 - `tail` checked the scheme
            f"{url}/api/v1/auth/token", data=body, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=15) as response:  # noqa: S310
                token: str = json.load(response)["access_token"]
                return token
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode()[:200]
            if exc.code not in (429, 503):
                raise SignInFailed(f"sign-in refused ({exc.code}): {detail}") from exc
            retry_after = exc.headers.get("Retry-After", "1")
            wait_s = min(int(retry_after) if retry_after.isdigit() else 1, MAX_SIGN_IN_WAIT_S)
            typer.echo(f"sign-in: {detail}; trying again in {wait_s} s", err=True)
            time.sleep(wait_s)


def acknowledge(url: str, token: str, alert_id: str) -> dict[str, Any]:
    request = urllib.request.Request(  # noqa: S310 - `tail` checked the scheme
        f"{url}/api/v1/alerts/{alert_id}/ack",
        method="POST",
        headers={"Authorization": f"Bearer {token}"},
    )
    with urllib.request.urlopen(request, timeout=15) as response:  # noqa: S310
        result: dict[str, Any] = json.load(response)
        return result


def county_zone(url: str, token: str) -> ZoneInfo | None:
    """The county's time zone, as the service names it (/auth/me): the times printed are
    the county's, as on its screens; None (UTC as sent) when it cannot be had."""
    request = urllib.request.Request(  # noqa: S310 - `tail` checked the scheme
        f"{url}/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=15) as response:  # noqa: S310
            return ZoneInfo(str(json.load(response)["timezone"]))
    except (OSError, KeyError, ValueError, ZoneInfoNotFoundError):
        return None


def line(alert: dict[str, Any], zone: ZoneInfo | None = None) -> str:
    org = alert["org"]
    place = org.get("grid") or org.get("village") or org.get("town") or org["county"]
    sent = datetime.fromisoformat(alert["sent_at"])
    when = sent.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S") if zone else alert["sent_at"]
    return (
        f"{when}  {alert['msg_type']:<6} {alert['severity']:<8} {alert['kind']:<14} "
        f"{place}  {alert['headline_zh']}  case={alert.get('case_id') or '-'}"
    )


async def follow(
    url: str,
    token_source: Any,
    state_file: Path,
    *,
    unit: str | None,
    ack: bool,
    as_json: bool,
    stop_after: int | None,
) -> int:
    """Print alerts until stopped (or `stop_after` of them); returns how many."""
    token = token_source()
    zone = None if as_json else county_zone(url, token)
    # A first run (nothing handled before) catches up on the whole history, which may long
    # have been someone else's to act on: it acknowledges only what comes while it runs.
    # A run that resumes acknowledges what came since the last alert it handled.
    started = datetime.now(UTC) if _last(state_file) is None else datetime.min.replace(tzinfo=UTC)
    printed = 0
    ws_base = url.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
    async for attempt in AsyncRetrying(
        retry=retry_if_exception_type((ConnectionClosed, OSError)),
        wait=wait_exponential_jitter(initial=1, max=30),
        reraise=True,
    ):
        with attempt:
            params = {k: v for k, v in (("after", _last(state_file)), ("unit", unit)) if v}
            query = f"?{urllib.parse.urlencode(params)}" if params else ""
            try:
                socket = await connect(
                    f"{ws_base}/api/v1/alerts/ws{query}",
                    additional_headers={"Authorization": f"Bearer {token}"},
                    open_timeout=15,
                )
            except InvalidStatus:
                token = token_source()  # expired: sign in again, once per refusal
                raise ConnectionRefusedError("the stream refused the token") from None
            stream = _Stream(socket)
            async with socket:
                async for raw in stream:
                    alert = json.loads(raw)["alert"]
                    typer.echo(
                        json.dumps(alert, ensure_ascii=False) if as_json else line(alert, zone)
                    )
                    if (
                        ack
                        and alert["msg_type"] == "alert"
                        and alert.get("case_state") == "intake"
                        and datetime.fromisoformat(alert["sent_at"]) >= started
                    ):
                        await _acknowledge(url, token, alert["alert_id"])
                    _remember(state_file, alert["alert_id"])  # after handling: at least once
                    printed += 1
                    if stop_after is not None and printed >= stop_after:
                        return printed
            if stream.signed_out:  # 4401: the token expired or was revoked
                token = token_source()
            if stream.unknown_after:  # 4404: a resume point this service never gave
                typer.echo(
                    f"  the service does not know the last alert kept in {state_file} "
                    "(another county's, or a database begun afresh): starting from its start",
                    err=True,
                )
                state_file.unlink(missing_ok=True)
                started = datetime.now(UTC)  # what it catches up on is not acknowledged
            raise ConnectionRefusedError("the stream ended: resuming after the last alert")
    return printed


class _Stream:
    """The stream's messages until it ends; one closed with 4401 (the token no longer holds)
    or 4404 (the resume point is unknown) ends quietly with `signed_out` or `unknown_after`
    set, any other unexpected close raises ConnectionClosed."""

    def __init__(self, socket: ClientConnection) -> None:
        self.socket = socket
        self.signed_out = False
        self.unknown_after = False

    async def __aiter__(self) -> AsyncIterator[str | bytes]:
        try:
            async for raw in self.socket:
                yield raw
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd is not None else None
            if code == SIGNED_OUT:
                self.signed_out = True
            elif code == UNKNOWN_AFTER:
                self.unknown_after = True
            else:
                raise


async def _acknowledge(url: str, token: str, alert_id: str) -> None:
    """Acknowledge the alert's case and say so. A case someone else moved on meanwhile
    (409), or that this user may no longer act on, is said and passed: the stream goes on.
    (An HTTP error is an OSError, which the stream's retry took for a lost link: it
    reconnected from the same alert and tried again, forever.)"""
    try:
        case = await asyncio.to_thread(acknowledge, url, token, alert_id)
    except urllib.error.HTTPError as exc:
        if exc.code == 401 or exc.code >= 500:
            # Expired (the reconnect signs in again) or the service's trouble: take the
            # stream up again from this alert, after a wait.
            raise ConnectionRefusedError(f"acknowledging answered {exc.code}") from None
        detail = exc.read().decode(errors="replace")[:300]
        typer.echo(f"  not acknowledged ({exc.code}): {detail}")
        return
    typer.echo(f"  acknowledged case {case['case_id']} -> {case['state']}")


def _last(state_file: Path) -> str | None:
    try:
        return state_file.read_text().strip() or None
    except FileNotFoundError:
        return None


def _remember(state_file: Path, alert_id: str) -> None:
    state_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = state_file.with_suffix(".tmp")
    tmp.write_text(alert_id)
    tmp.replace(state_file)


@app.command()
def tail(
    url: Annotated[str, typer.Option(envvar="GRIDWATCH_URL", help="The county service.")] = (
        "http://127.0.0.1:8080"
    ),
    username: Annotated[str | None, typer.Option(envvar="GRIDWATCH_USERNAME")] = None,
    password: Annotated[
        str | None, typer.Option(envvar="GRIDWATCH_PASSWORD", help="Asked for when not given.")
    ] = None,
    token: Annotated[
        str | None, typer.Option(envvar="GRIDWATCH_TOKEN", help="An API token instead.")
    ] = None,
    unit: Annotated[str | None, typer.Option(help="Only this unit and below.")] = None,
    ack: Annotated[
        bool,
        typer.Option(help="Acknowledge each new case as it arrives (not those it catches up on)."),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON alert per line.")] = False,
    state_file: Annotated[
        Path | None, typer.Option(help="Where the last alert id is kept (resume point).")
    ] = None,
    count: Annotated[int | None, typer.Option(help="Stop after this many alerts.")] = None,
) -> None:
    """Print the alerts of your jurisdiction as they come, from where you left off."""
    if not url.startswith(("http://", "https://")):
        typer.echo("error: --url must be http://... or https://...", err=True)
        raise typer.Exit(2)
    if token is None and username is None:
        typer.echo("error: give --username (and a password) or --token", err=True)
        raise typer.Exit(2)
    if token is None and password is None:
        password = typer.prompt("password", hide_input=True)

    def token_source() -> str:
        if token is not None:
            return token
        return sign_in(url.rstrip("/"), username or "", password or "")

    who = username or "token"
    # One resume point per service and user: another county's (or another demo's) alert
    # id means nothing here.
    service = hashlib.sha256(url.rstrip("/").encode()).hexdigest()[:12]
    state = (
        state_file
        or Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local" / "state"))
        / "gridwatch"
        / f"alerts-{service}-{who}.last"
    )
    try:
        asyncio.run(
            follow(
                url.rstrip("/"),
                token_source,
                state,
                unit=unit,
                ack=ack,
                as_json=as_json,
                stop_after=count,
            )
        )
    except SignInFailed as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    except KeyboardInterrupt:
        pass
