"""Mosquitto's dynamic-security plugin: its file for a broker about to start, the state a
running one reports, and the commands that take that state to the registry's.

The plugin answers a SUBSCRIBE it does not allow with "Not authorized" (0x87), where an
acl_file grants it and then drops at delivery what the subscriber may not read (which, in a
shared subscription, drains the members' share). Node accounts carry no password here: the
broker's password file authenticates them (the registry keeps only hashes, and the plugin
takes only plain passwords at run time); the plugin binds each to its client id and holds
its rules. Mosquitto 2.0 does not substitute `%u` in the plugin's rules, so each node has
its own role."""

from __future__ import annotations

import glob
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from cloud.broker_acl import AclType, Grants, Rule


def _plugin_path() -> str:
    """Where Debian's mosquitto package puts the plugin, on this machine's architecture."""
    found = sorted(glob.glob("/usr/lib/*/mosquitto_dynamic_security.so"))
    return found[0] if found else "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so"


PLUGIN = _plugin_path()
CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
ADMIN_ROLE = "service/admin"
ADMIN_RULES: frozenset[Rule] = frozenset(
    (acl, "$CONTROL/dynamic-security/#")
    for acl in (AclType.PUBLISH, AclType.RECEIVE, AclType.SUBSCRIBE)
)
# Nothing is allowed unless a role allows it, receiving included (see role_rules).
DEFAULT_ACCESS = {
    "publishClientSend": False,
    "publishClientReceive": False,
    "subscribe": False,
    "unsubscribe": True,
}

Command = dict[str, Any]
# A rule as the plugin states it: type, topic, allowed. Ours are all allowing ones; a rule
# someone added by hand (a deny, another type) is a difference to remove.
PluginRule = tuple[str, str, bool]


@dataclass
class BrokerState:
    """What a running plugin holds: roles with their rules, clients with their roles, client
    ids and whether disabled, and the default access."""

    roles: dict[str, frozenset[PluginRule]] = field(default_factory=dict)
    clients: dict[str, frozenset[str]] = field(default_factory=dict)
    client_ids: dict[str, str | None] = field(default_factory=dict)
    disabled: set[str] = field(default_factory=set)
    default_access: dict[str, bool] = field(default_factory=dict)


def _plugin_rules(rules: Iterable[Rule]) -> frozenset[PluginRule]:
    return frozenset((acl.value, topic, True) for acl, topic in rules)


def _acls(rules: Iterable[PluginRule]) -> list[dict[str, Any]]:
    return [
        {"acltype": acl, "topic": topic, "priority": 0, "allow": allow}
        for acl, topic, allow in sorted(rules)
    ]


def render_config(grants: Grants, admin: str, admin_hash: str) -> str:
    """The plugin's JSON file, whole, for a broker that is not running (it reads the file
    only at start, and saves it itself after every change). `admin_hash` is a `$7$` hash
    (protocols.passwords): the plugin keeps the same PBKDF2-SHA512 as three fields."""
    _, _, iterations, salt, digest = admin_hash.split("$")
    clients: list[dict[str, Any]] = [
        {
            "username": admin,
            "clientid": admin,
            "password": digest,
            "salt": salt,
            "iterations": int(iterations),
            "roles": [{"rolename": ADMIN_ROLE}],
        }
    ]
    clients += [
        {
            "username": username,
            "clientid": username,
            "roles": [{"rolename": role} for role in sorted(roles)],
        }
        for username, roles in sorted(grants.clients.items())
    ]
    roles = {**grants.roles, ADMIN_ROLE: ADMIN_RULES}
    config = {
        "defaultACLAccess": DEFAULT_ACCESS,
        "clients": clients,
        "groups": [],
        "roles": [
            {"rolename": name, "acls": _acls(_plugin_rules(rules))}
            for name, rules in sorted(roles.items())
        ],
    }
    return json.dumps(config, indent=1, ensure_ascii=False) + "\n"


def read_state(
    clients: dict[str, Any], roles: dict[str, Any], access: dict[str, Any]
) -> BrokerState:
    """From the data of `listClients` and `listRoles` (verbose) and `getDefaultACLAccess`."""
    state = BrokerState()
    for role in roles["roles"]:
        state.roles[role["rolename"]] = frozenset(
            (a["acltype"], a["topic"], bool(a.get("allow"))) for a in role.get("acls", [])
        )
    for client in clients["clients"]:
        username = client["username"]
        state.clients[username] = frozenset(r["rolename"] for r in client.get("roles", []))
        state.client_ids[username] = client.get("clientid")
        if client.get("disabled"):
            state.disabled.add(username)
    state.default_access = {a["acltype"]: bool(a["allow"]) for a in access["acls"]}
    return state


def plan(
    current: BrokerState, wanted: Grants, *, admin: str, in_password_file: set[str]
) -> list[Command]:
    """The commands, in order, that take `current` to `wanted`. The admin (sync's own
    account) and its role are left as they are: changing a role disconnects its clients.
    An account that is no longer wanted is disabled at once (refused, and disconnected) and
    deleted by a later round, once the password file no longer has it: an account in the
    password file that the plugin does not bind could take any client id."""
    commands: list[Command] = []
    if current.default_access != DEFAULT_ACCESS:
        acls = [{"acltype": a, "allow": allow} for a, allow in DEFAULT_ACCESS.items()]
        commands.append({"command": "setDefaultACLAccess", "acls": acls})
    for name, rules in sorted(wanted.roles.items()):
        want = _plugin_rules(rules)
        have = current.roles.get(name)
        if have is None:
            commands.append({"command": "createRole", "rolename": name, "acls": _acls(want)})
            continue
        commands += [
            {"command": "removeRoleACL", "rolename": name, "acltype": acl, "topic": topic}
            for acl, topic, _ in sorted(have - want)
        ]
        commands += [{"command": "addRoleACL", "rolename": name, **a} for a in _acls(want - have)]
    for username, roles in sorted(wanted.clients.items()):
        commands += _client_changes(current, username, roles)
    kept_roles = {role for roles in wanted.clients.values() for role in roles} | {ADMIN_ROLE}
    for username, roles in sorted(current.clients.items()):
        if username == admin or username in wanted.clients:
            kept_roles |= roles
        elif username not in current.disabled:
            commands.append({"command": "disableClient", "username": username})
            kept_roles |= roles
        elif username in in_password_file:
            kept_roles |= roles  # deleted once the file no longer has it
        else:
            commands.append({"command": "deleteClient", "username": username})
    commands += [
        {"command": "deleteRole", "rolename": name}
        for name in sorted(current.roles)
        if name not in wanted.roles and name not in kept_roles
    ]
    return commands


def _client_changes(current: BrokerState, username: str, roles: frozenset[str]) -> list[Command]:
    if username not in current.clients:
        return [
            {
                "command": "createClient",
                "username": username,
                "clientid": username,
                "roles": [{"rolename": role} for role in sorted(roles)],
            }
        ]
    commands: list[Command] = []
    if current.client_ids.get(username) != username:
        commands.append({"command": "setClientId", "username": username, "clientid": username})
    have = current.clients[username]
    commands += [
        {"command": "addClientRole", "username": username, "rolename": role}
        for role in sorted(roles - have)
    ]
    commands += [
        {"command": "removeClientRole", "username": username, "rolename": role}
        for role in sorted(have - roles)
    ]
    if username in current.disabled:
        commands.append({"command": "enableClient", "username": username})
    return commands
