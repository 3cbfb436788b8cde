"""What every request and response passes: text PostgreSQL cannot store refused as a 422
naming the field, before any route runs (a NUL in a query parameter answered 500 and cut CSV
exports mid-stream); security headers on every response; credentials kept out of the access
log.

Pure ASGI middleware: a body is read once, checked only when it could hold such text (JSON
writes a NUL or a lone surrogate only as a `\\u` escape), and handed on unchanged."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, unquote

from fastapi.routing import iter_route_contexts
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from protocols.nesting import exceeds_depth

SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"content-security-policy", b"frame-ancestors 'none'"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]
MESSAGE = "text may not contain NUL characters or lone surrogates"
NOT_UTF8 = "a JSON body must be UTF-8"
# No body of this API nests half as deep (a box's config: 7 levels).
MAX_DEPTH = 32
DEEP = f"a JSON body may nest {MAX_DEPTH} levels deep, no more"
Refusal = tuple[tuple[str | int, ...], str]  # where, and why


def bad_text(value: str) -> bool:
    if "\x00" in value:
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _bad_fields(value: Any, loc: tuple[str | int, ...]) -> Iterator[tuple[str | int, ...]]:
    """Where in a parsed JSON document text is bad (keys included)."""
    if isinstance(value, str):
        if bad_text(value):
            yield loc
    elif isinstance(value, dict):
        for key, item in value.items():
            if bad_text(key):
                yield (*loc, key.encode("utf-8", "backslashreplace").decode())
            yield from _bad_fields(item, (*loc, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _bad_fields(item, (*loc, index))


def _query_fields(raw: bytes, where: str) -> list[tuple[str | int, ...]]:
    # A lone surrogate cannot arrive percent-encoded (it is no UTF-8); a NUL can.
    if b"%00" not in raw and b"\x00" not in raw:
        return []
    return [
        (where, key)
        for key, value in parse_qsl(raw.decode("latin-1"), keep_blank_values=True)
        if "\x00" in key or "\x00" in value
    ]


def _path_fields(scope: Scope) -> list[tuple[str | int, ...]]:
    """The path parameters holding a NUL, named as the route names them; the path itself
    where no route names one."""
    for route in iter_route_contexts(scope["app"].routes):
        match, child = route.matches(scope)
        if match is not Match.NONE:
            params = child.get("path_params", {})
            named: list[tuple[str | int, ...]] = [
                ("path", name) for name, value in params.items() if "\x00" in str(value)
            ]
            return named or [("path",)]
    return [("path",)]


class Guards:
    """Refuse bad text with a 422 (the shape FastAPI gives a validation error) and add the
    security headers to every HTTP response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        locs = _query_fields(scope.get("query_string", b""), "query")
        if "\x00" in scope.get("path", ""):
            locs += _path_fields(scope)
        bad = [(loc, MESSAGE) for loc in locs]
        body: list[Message] = []
        if scope["type"] == "http" and not bad:
            body, bad = await self._read_body(scope, receive)
        if bad:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008, "reason": MESSAGE})
                return
            await self._refuse(send, bad)
            return
        if body:
            receive = _replay(body, receive)
        await self.app(
            scope,
            receive,
            self._with_headers(send, scope["path"].startswith("/api/"))
            if scope["type"] == "http"
            else send,
        )

    async def _read_body(
        self, scope: Scope, receive: Receive
    ) -> tuple[list[Message], list[Refusal]]:
        headers = dict(scope.get("headers", []))
        kind = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if kind not in (b"application/json", b"application/x-www-form-urlencoded"):
            return [], []
        messages: list[Message] = []
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request" or not message.get("more_body", False):
                break
        raw = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.request")
        if kind == b"application/x-www-form-urlencoded":
            return messages, [(loc, MESSAGE) for loc in _query_fields(raw, "body")]
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            return messages, [(("body",), NOT_UTF8)]
        if exceeds_depth(raw, MAX_DEPTH):  # before any recursive parser or formatter
            return messages, [(("body",), DEEP)]
        if b"\\u" not in raw:
            return messages, []
        try:
            document = json.loads(raw)
        except ValueError:
            return messages, []  # not JSON: the route's own validation says so
        return messages, [(loc, MESSAGE) for loc in _bad_fields(document, ("body",))]

    async def _refuse(self, send: Send, bad: list[Refusal]) -> None:
        detail = [{"type": "bad_text", "loc": list(loc), "msg": msg} for loc, msg in bad]
        payload = json.dumps({"detail": detail}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 422,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                    *SECURITY_HEADERS,
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    @staticmethod
    def _with_headers(send: Send, api: bool) -> Send:
        # The API's answers carry personal data and, once, secrets (an API token, a box's
        # password): no cache keeps them unless the route says so (a snapshot does).
        extra = [*SECURITY_HEADERS, (b"cache-control", b"no-store")] if api else SECURITY_HEADERS

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = [
                    *message.get("headers", []),
                    *(h for h in extra if h[0] not in present),
                ]
            await send(message)

        return sending


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """The body read here, then whatever comes next (a disconnect) from the client."""
    pending = list(messages)

    async def replaying() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replaying


# A parameter whose name (percent-decoded) says it holds a secret: its value is blanked.
_PARAMETER = re.compile(r"([?&;])([^=&;\s]+)=([^&;\s\"]*)")
_SECRET_NAME = re.compile(r"pass|pw|secret|token|key|auth|cred|sign|ticket|session", re.I)
# Whatever looks like one of gridwatch's credentials, wherever it stands (a path, any
# parameter), percent-encoded or not: a JWT (three base64url parts, the first `eyJ`), an API
# token (`gwt_`), a webhook secret (`whsec_`).
_TOKEN_SHAPED = re.compile(r"eyJ[\w%-]+\.[\w%-]+\.[\w%-]*|(?:gwt|whsec)(?:_|%5f)[\w%-]+", re.I)


def _blank_secret(match: re.Match[str]) -> str:
    separator, name, value = match.groups()
    if _SECRET_NAME.search(unquote(name)):
        value = "[redacted]"
    return f"{separator}{name}={value}"


def redacted(text: str) -> str:
    return _TOKEN_SHAPED.sub("[redacted]", _PARAMETER.sub(_blank_secret, text))


class RedactCredentials(logging.Filter):
    """Blank any credential a client put in a URL before the server's log writes the line
    (gridwatch never asks for one there; a client may still send one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redacted(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.msg, str):
            record.msg = redacted(record.msg)
        return True


def redact_access_log() -> None:
    # HTTP lines go to uvicorn.access; WebSocket handshakes to uvicorn.error.
    for name in ("uvicorn.access", "uvicorn.error"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactCredentials) for f in logger.filters):
            logger.addFilter(RedactCredentials())
