"""Who may do what on the county broker, from the channel table, the registry and the org
tree: each node its own subtree, each ingest process the ingest group, each API process the
topics it publishes, each app account the alerts of its jurisdiction. Every account is bound
to one client id, its username, so no account can take another's connection away."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated

from pydantic import Field

from cloud.org_files import Code, Row
from protocols.acl import Access, api_acl, app_acl, ingest_acl, node_acl
from protocols.alerts import OrgPath
from protocols.topics import shared

# A dot can never appear in a node id, so no app or service account can also be a node.
APP_USERNAME_PATTERN = r"^app\.[a-z0-9][a-z0-9_-]{1,47}$"
# The part before the dot says what the process is: `ingest.1` joins the ingest group,
# `api.1` publishes configs, commands and alerts.
SERVICE_USERNAME_PATTERN = r"^(ingest|api)\.[a-z0-9][a-z0-9_-]{0,47}$"

INGEST_ROLE = "service/ingest"
API_ROLE = "service/api"


def node_role(node_id: str) -> str:
    return f"node/{node_id}"


def app_role(username: str) -> str:
    return f"app/{username}"


class AppAccountRow(Row):
    username: Annotated[str, Field(pattern=APP_USERNAME_PATTERN, examples=["app.town-106"])]
    unit_code: Code


class AclType(StrEnum):
    """The plugin's names for what a rule allows."""

    PUBLISH = "publishClientSend"
    RECEIVE = "publishClientReceive"
    SUBSCRIBE = "subscribePattern"


Rule = tuple[AclType, str]


@dataclass(frozen=True)
class Grants:
    """Roles by name with their rules, and accounts by username with their roles."""

    roles: dict[str, frozenset[Rule]]
    clients: dict[str, frozenset[str]]


def role_rules(acl: Iterable[tuple[Access, str]], group: str | None = None) -> frozenset[Rule]:
    """A protocol ACL in the plugin's terms. Reading is allowed twice over: the SUBSCRIBE
    (refused at once when not allowed, so nobody joins a group to drain it) and each
    delivery (so a subscription an older broker granted delivers nothing it should not).
    With `group`, the filters may only be subscribed as that shared-subscription group."""
    rules: set[Rule] = set()
    for access, topic in acl:
        if access is Access.WRITE:
            rules.add((AclType.PUBLISH, topic))
        else:
            rules.add((AclType.SUBSCRIBE, shared(topic, group) if group else topic))
            rules.add((AclType.RECEIVE, topic))
    return frozenset(rules)


def service_role(username: str) -> str:
    return INGEST_ROLE if username.startswith("ingest.") else API_ROLE


def grants(
    node_ids: Iterable[str],
    services: Iterable[str],
    apps: Iterable[tuple[str, OrgPath]],
    others: Iterable[str],
    *,
    ingest_group: str,
) -> Grants:
    """Every account the broker takes, with what it may do; `others` (accounts made by hand,
    such as an integration's) may connect and do nothing until a role is given to them here."""
    roles: dict[str, frozenset[Rule]] = {
        INGEST_ROLE: role_rules(ingest_acl(), ingest_group),
        API_ROLE: role_rules(api_acl()),
    }
    clients: dict[str, frozenset[str]] = {}
    for node_id in node_ids:
        roles[node_role(node_id)] = role_rules(node_acl(node_id))
        clients[node_id] = frozenset({node_role(node_id)})
    for username in services:
        clients[username] = frozenset({service_role(username)})
    for username, org in apps:
        roles[app_role(username)] = role_rules(app_acl(org.county, org.town, org.village, org.grid))
        clients[username] = frozenset({app_role(username)})
    for username in others:
        clients.setdefault(username, frozenset())
    return Grants(roles, clients)
