"""A TEST DOUBLE of balena's cloud API (balenaCloud cannot be reached from here), faithful
to the wire behaviour recorded in ../shared/reference/balena-sdk.md §2 for the calls the
provisioning tool makes through balena-sdk 17.3.0:

- OData under /v7/: `{"d": [...]}` for every GET (keyed ones too; no rows = not found),
  unexpanded links as `{"__id": N}`, `$select`, `$filter` (eq, ne, and, or, in, parentheses),
  `$expand` of `is_for__device_type($select=slug)`, `$orderby`, `$top`; POST 201 with the
  row, 409 `Unique key constraint violated` on a duplicate natural key; PATCH and DELETE by
  key or `$filter`, answered `OK`;
- `POST /api-key/v1/` → the key as a JSON string; `POST /device/register` with a
  provisioning key → 201 `{id, uuid, api_key}`, 409 `"uuid" must be unique.`;
- `GET /actor/v1/whoami`; 401 for an unknown token;
- a rate limit per token (`limit` requests per `window_s`): 429 with `Retry-After`.

Every request is recorded (`requests`) so tests can count them and check their shape.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

# Natural keys per resource: a second row with the same values is a 409.
UNIQUE = {
    "application": [("slug",)],
    "device": [("uuid",)],
    "device_tag": [("device", "tag_key")],
    "device_environment_variable": [("device", "name")],
    "application_environment_variable": [("application", "name")],
    "application_tag": [("application", "tag_key")],
    "api_key": [("key",)],
}
# Link fields: stored as ids, returned as {"__id": N} unless expanded.
LINKS = {
    "device": {"belongs_to__application": "application", "is_of__device_type": "device_type"},
    "application": {"is_for__device_type": "device_type", "organization": "organization"},
    "device_tag": {"device": "device"},
    "device_environment_variable": {"device": "device"},
    "application_environment_variable": {"application": "application"},
    "application_tag": {"application": "application"},
}


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    body: Any
    token: str
    status: int


# ---- a small OData $filter evaluator ----------------------------------------------------

_TOKEN = re.compile(r"\s*(\(|\)|,|'(?:[^']|'')*'|-?\d+(?:\.\d+)?|[A-Za-z_][\w/]*)")


def _tokens(text: str) -> list[str]:
    out, pos = [], 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match:
            if text[pos:].strip() == "":
                break
            raise ValueError(f"cannot parse $filter at {text[pos:]!r}")
        out.append(match.group(1))
        pos = match.end()
    return out


def _literal(token: str) -> Any:
    if token.startswith("'"):
        return token[1:-1].replace("''", "'")
    if token in ("true", "false"):
        return token == "true"
    if token == "null":
        return None
    return float(token) if "." in token else int(token)


class _Filter:
    """Recursive descent over `or` / `and` / comparisons / parentheses."""

    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.pos = 0

    def _peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def _take(self) -> str:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def parse(self) -> Any:
        tree = self._or()
        if self._peek() is not None:
            raise ValueError(f"unexpected {self._peek()!r} in $filter")
        return tree

    def _or(self) -> Any:
        left = self._and()
        while self._peek() == "or":
            self._take()
            left = ("or", left, self._and())
        return left

    def _and(self) -> Any:
        left = self._atom()
        while self._peek() == "and":
            self._take()
            left = ("and", left, self._atom())
        return left

    def _atom(self) -> Any:
        if self._peek() == "(":
            self._take()
            inner = self._or()
            assert self._take() == ")"
            return inner
        name = self._take()
        op = self._take()
        if op == "in":
            assert self._take() == "("
            values = [_literal(self._take())]
            while self._peek() == ",":
                self._take()
                values.append(_literal(self._take()))
            assert self._take() == ")"
            return ("in", name, values)
        if op not in ("eq", "ne"):
            raise ValueError(f"operator {op!r} not supported by this double")
        return (op, name, _literal(self._take()))


def _matches(tree: Any, row: dict[str, Any]) -> bool:
    kind = tree[0]
    if kind == "and":
        return _matches(tree[1], row) and _matches(tree[2], row)
    if kind == "or":
        return _matches(tree[1], row) or _matches(tree[2], row)
    value = row.get(tree[1])
    if kind == "eq":
        return bool(value == tree[2])
    if kind == "ne":
        return bool(value != tree[2])
    return value in tree[2]


def _split_top(text: str, sep: str) -> list[str]:
    """Split on `sep` outside parentheses."""
    parts, depth, current = [], 0, ""
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == sep and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    if current:
        parts.append(current)
    return parts


# ---- the double -----------------------------------------------------------------------


@dataclass
class BalenaDouble:
    """State of the pretend balenaCloud: tables of rows, tokens, the rate limit."""

    user_token: str = "technician-api-key"
    latency_s: float = 0.0  # a bench's stand-in for the round trip to balenaCloud
    limit: int = 10_000  # requests per window per token
    window_s: float = 60.0
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    provisioning_keys: dict[str, int] = field(default_factory=dict)  # key -> application id
    next_id: int = 100
    fail_next: list[int] = field(default_factory=list)  # statuses to answer next, in order
    # A test's own refusal: (method, path, body) -> a status to answer instead, or None.
    refuse: Callable[[str, str, Any], int | None] | None = None
    # A test's hold on a request on its way, before it is handled: (method, path, query, body).
    hold: Callable[[str, str, dict[str, str], Any], None] | None = None
    in_flight: int = 0  # requests received and not yet answered
    lock: threading.Lock = field(default_factory=threading.Lock)
    _seen: dict[str, deque[float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in (
            "application",
            "device",
            "device_type",
            "organization",
            "device_tag",
            "device_environment_variable",
            "application_environment_variable",
            "application_tag",
            "api_key",
        ):
            self.tables.setdefault(name, [])
        self.insert("device_type", {"slug": "generic-amd64", "name": "Generic x86_64"})
        self.insert("organization", {"handle": "qu-county", "name": "Qu County"})

    def insert(self, table: str, row: dict[str, Any]) -> dict[str, Any]:
        self.next_id += 1
        stored = {"id": self.next_id, **row}
        self.tables[table].append(stored)
        return stored

    def add_fleet(self, slug: str, device_type: str = "generic-amd64") -> int:
        type_id = next(r["id"] for r in self.tables["device_type"] if r["slug"] == device_type)
        org_id = self.tables["organization"][0]["id"]
        row = self.insert(
            "application",
            {
                "slug": slug,
                "app_name": slug.split("/")[-1],
                "uuid": secrets.token_hex(16),
                "is_for__device_type": type_id,
                "organization": org_id,
            },
        )
        return int(row["id"])

    def devices(self) -> list[dict[str, Any]]:
        return list(self.tables["device"])

    # -- rendering rows as the API does
    def render(
        self, table: str, row: dict[str, Any], select: list[str] | None, expand: dict[str, Any]
    ) -> dict[str, Any]:
        links = LINKS.get(table, {})
        out: dict[str, Any] = {}
        for key, value in row.items():
            if select is not None and key not in select and key not in expand:
                continue
            if key in links and value is not None:
                if key in expand:
                    target = [r for r in self.tables[links[key]] if r["id"] == value]
                    sub_select = expand[key].get("$select")
                    out[key] = [
                        {k: v for k, v in t.items() if sub_select is None or k in sub_select}
                        for t in target
                    ]
                else:
                    out[key] = {"__id": value}
            else:
                out[key] = value
        return out

    def rate_limited(self, token: str) -> float | None:
        """Seconds to wait when `token` is over its limit, else None (and the request counts)."""
        now = time.monotonic()
        seen = self._seen.setdefault(token, deque())
        while seen and seen[0] <= now - self.window_s:
            seen.popleft()
        if len(seen) >= self.limit:
            return max(0.0, seen[0] + self.window_s - now)
        seen.append(now)
        return None


def _parse_expand(text: str | None) -> dict[str, dict[str, Any]]:
    """`nav($select=a,b;$expand=...)` → {nav: {"$select": [a, b]}} (one level is enough)."""
    out: dict[str, dict[str, Any]] = {}
    if not text:
        return out
    for part in _split_top(text, ","):
        name, _, rest = part.partition("(")
        options: dict[str, Any] = {}
        for option in _split_top(rest.rstrip(")"), ";"):
            key, _, value = option.partition("=")
            if key == "$select":
                options["$select"] = value.split(",")
        out[name.strip()] = options
    return out


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _reply(
        self,
        status: int,
        body: Any,
        headers: dict[str, str] | None = None,
        *,
        json_text: bool = False,
    ) -> None:
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(status)
        plain = isinstance(body, str) and not json_text
        content_type = "text/plain" if plain else "application/json"
        self.send_header("Content-Type", content_type)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self._status = status

    def _handle(self, method: str) -> None:
        double = self.server.double
        with double.lock:
            double.in_flight += 1
        try:
            self._handle_counted(double, method)
        finally:
            with double.lock:
                double.in_flight -= 1

    def _handle_counted(self, double: BalenaDouble, method: str) -> None:
        split = urlsplit(self.path)
        # The SDK sends spaces as %20 and leaves $ ' ( , as they are.
        query = {k: v[0] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else None
        token = self.headers.get("Authorization", "").removeprefix("Bearer ")
        self._status = 0
        if double.latency_s:
            time.sleep(double.latency_s)  # the network's round trip, outside the lock
        if double.hold:
            double.hold(method, unquote(split.path), query, body)  # outside the lock
        with double.lock:
            try:
                self._route(double, method, unquote(split.path), query, body, token)
            finally:
                double.requests.append(
                    Recorded(method, unquote(split.path), query, body, token, self._status)
                )

    def _route(
        self,
        double: BalenaDouble,
        method: str,
        path: str,
        query: dict[str, str],
        body: Any,
        token: str,
    ) -> None:
        if double.fail_next:
            status = double.fail_next.pop(0)
            self._reply(
                status,
                "Internal error" if status >= 500 else "Too Many Requests",
                {"Retry-After": "1"} if status == 429 else None,
            )
            return
        refused = double.refuse(method, path, body) if double.refuse else None
        if refused is not None:
            self._reply(refused, "Refused by the test")
            return
        wait = double.rate_limited(token)
        if wait is not None:
            self._reply(429, "Too Many Requests", {"Retry-After": str(max(1, round(wait)))})
            return
        if path == "/device/register" and method == "POST":
            self._register(double, body, token)
            return
        if token != double.user_token:
            self._reply(401, "Unauthorized")
            return
        if path == "/actor/v1/whoami":
            self._reply(
                200,
                {
                    "id": 5,
                    "actorType": "user",
                    "actorTypeId": 5,
                    "username": "technician",
                    "email": "tech@example.org",
                },
            )
            return
        if path == "/api-key/v1/" and method == "POST":
            key = secrets.token_hex(16)
            double.provisioning_keys[key] = body["actorTypeId"]
            double.insert(
                "api_key",
                {
                    "key": key,
                    "name": body.get("name"),
                    "expiry_date": body.get("expiryDate"),
                    "is_of__actor": body["actorTypeId"],
                },
            )
            self._reply(200, json.dumps(key), json_text=True)  # a JSON string, quotes and all
            return
        if path.startswith("/v7/"):
            self._odata(double, method, path.removeprefix("/v7/"), query, body)
            return
        self._reply(404, "Not Found")

    def _register(self, double: BalenaDouble, body: Any, token: str) -> None:
        application = double.provisioning_keys.get(token)
        if application is None:
            self._reply(401, "Unauthorized")
            return
        if not body or not all(k in body for k in ("application", "device_type", "uuid")):
            self._reply(400, "application, device_type and uuid are required")
            return
        if body["application"] != application:
            self._reply(403, "Forbidden")
            return
        if any(d["uuid"] == body["uuid"] for d in double.tables["device"]):
            self._reply(409, '"uuid" must be unique.')
            return
        type_id = next(
            (r["id"] for r in double.tables["device_type"] if r["slug"] == body["device_type"]),
            None,
        )
        if type_id is None:
            self._reply(403, "Forbidden")
            return
        api_key = body.get("api_key") or secrets.token_hex(16)
        row = double.insert(
            "device",
            {
                "uuid": body["uuid"],
                "device_name": body["uuid"][:7],
                "belongs_to__application": application,
                "is_of__device_type": type_id,
                "is_online": False,
                "api_heartbeat_state": "unknown",
                "is_active": True,
                "note": None,
                "created_at": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
            },
        )
        self._reply(201, {"id": row["id"], "uuid": row["uuid"], "api_key": api_key})

    def _odata(
        self, double: BalenaDouble, method: str, path: str, query: dict[str, str], body: Any
    ) -> None:
        match = re.fullmatch(r"([a-z_]+)(?:\((.*)\))?", path)
        if not match or match.group(1) not in double.tables:
            self._reply(404, "Not Found")
            return
        table, key = match.group(1), match.group(2)
        rows = double.tables[table]
        selected = rows
        if key is not None:
            if key.isdigit():
                selected = [r for r in rows if r["id"] == int(key)]
            else:
                name, _, value = key.partition("=")
                selected = [r for r in rows if r.get(name) == _literal(value)]
        if "$filter" in query:
            tree = _Filter(query["$filter"]).parse()
            selected = [r for r in selected if _matches(tree, r)]
        if method == "GET":
            select = query["$select"].split(",") if "$select" in query else None
            expand = _parse_expand(query.get("$expand"))
            if "$orderby" in query:
                field_name, _, direction = query["$orderby"].partition(" ")
                selected = sorted(
                    selected, key=lambda r: str(r.get(field_name)), reverse=direction == "desc"
                )
            if "$top" in query:
                selected = selected[: int(query["$top"])]
            self._reply(200, {"d": [double.render(table, r, select, expand) for r in selected]})
        elif method == "POST":
            for unique in UNIQUE.get(table, []):
                if any(all(r.get(k) == body.get(k) for k in unique) for r in rows):
                    self._reply(409, "Unique key constraint violated")
                    return
            self._reply(201, double.render(table, double.insert(table, dict(body)), None, {}))
        elif method == "PATCH":
            for row in selected:
                row.update(body)
            self._reply(200, "OK")
        elif method == "DELETE":
            for row in selected:
                rows.remove(row)
                if table == "device":  # what belongs to a device goes with it
                    for child in ("device_tag", "device_environment_variable"):
                        double.tables[child] = [
                            r for r in double.tables[child] if r["device"] != row["id"]
                        ]
            self._reply(200, "OK")
        else:
            self._reply(405, "Method Not Allowed")

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def do_DELETE(self) -> None:
        self._handle("DELETE")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    double: BalenaDouble


class BalenaApiDouble:
    """The double served on a free loopback port: `url` is what the tool's
    PROVISION_BALENA_API_URL points at."""

    def __init__(self, double: BalenaDouble | None = None) -> None:
        self.double = double or BalenaDouble()
        self.server = _Server(("127.0.0.1", 0), _Handler)
        self.server.double = self.double
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/"

    def __enter__(self) -> BalenaApiDouble:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
