"""Generate the documents other teams read: JSON Schemas, the AsyncAPI 3.0 document, README.

`gridwatch protocols export` writes them into this package; a test fails when the committed
files differ from what this module generates, so they cannot drift from the code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic.json_schema import models_json_schema

from protocols.base import SCHEMA_VERSION, Payload
from protocols.catalog import CHANNELS, PAYLOAD_MODELS, ChannelSpec, Direction
from protocols.codec import encode
from protocols.examples import EXAMPLES
from protocols.nesting import max_depth, max_values
from protocols.readme import render_readme
from protocols.topics import Channel

PACKAGE_DIR = Path(__file__).resolve().parent
SCHEMA_ID_PREFIX = f"urn:gridwatch:schema:v{SCHEMA_VERSION}:"
_MQTT_BINDING_VERSION = "0.2.0"


def _dump(document: Any) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False, sort_keys=False) + "\n"


def example_payload(model: type[Payload]) -> Any:
    """The example message of `model` as it appears on the wire."""
    return json.loads(encode(EXAMPLES[model]))


def json_schema(model: type[Payload]) -> dict[str, Any]:
    schema = model.model_json_schema(mode="validation")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"{SCHEMA_ID_PREFIX}{model.__name__}",
        **schema,
        "examples": [example_payload(model)],
    }


def _to_draft07(node: Any) -> Any:
    """AsyncAPI schemas are JSON Schema draft-07: tuples use `items: [...]`, and a
    discriminator is a property name, not an OpenAPI mapping object."""
    if isinstance(node, list):
        return [_to_draft07(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "prefixItems":
            out["items"] = _to_draft07(value)
            out["additionalItems"] = False
        elif key == "discriminator" and isinstance(value, dict):
            out["discriminator"] = value["propertyName"]
        else:
            out[key] = _to_draft07(value)
    return out


_PARAMETERS = {
    "node_id": "Edge node id (also its MQTT client id and username); "
    "`[A-Za-z0-9][A-Za-z0-9_-]{0,63}`.",
    "event_id": "The event the snapshot belongs to (UUID).",
    "variant": "`frame` (full frame, box drawn) or `crop` (the object).",
    "request_id": "Command request id (UUID), repeated in the response topic.",
    "county": "County code.",
    "town": "Town code, or `-` for a county-level alert.",
    "village": "Village code, or `-` above village level.",
    "grid": "Grid code, or `-` above grid level.",
    "kind": "Alert kind, e.g. `intrusion`, `node_offline`.",
}


def _channel_key(spec: ChannelSpec) -> str:
    return spec.channel.value.replace("/", "_")


def _message_name(spec: ChannelSpec) -> str:
    return spec.payload.__name__ if spec.payload else "SnapshotJpeg"


def _operation(spec: ChannelSpec) -> tuple[str, dict[str, Any]]:
    # The document describes the gridwatch cloud: it receives what nodes send and sends
    # configs, commands and alerts. An edge node does the mirror image.
    action = "receive" if spec.direction is Direction.EDGE_TO_CLOUD else "send"
    key = _channel_key(spec)
    name = action + "".join(part.capitalize() for part in key.split("_"))
    return name, {
        "action": action,
        "channel": {"$ref": f"#/channels/{key}"},
        "summary": spec.summary,
        "description": f"{spec.direction.value}; QoS {spec.qos}; "
        f"{'retained' if spec.retain else 'not retained'}.",
        "messages": [{"$ref": f"#/channels/{key}/messages/{_message_name(spec)}"}],
        "bindings": {
            "mqtt": {
                "qos": spec.qos,
                "retain": spec.retain,
                "bindingVersion": _MQTT_BINDING_VERSION,
            }
        },
    }


def asyncapi_document() -> dict[str, Any]:
    _, top = models_json_schema(
        [(model, "validation") for model in PAYLOAD_MODELS],
        ref_template="#/components/schemas/{model}",
    )
    schemas = _to_draft07(top["$defs"])
    messages: dict[str, Any] = {}
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for spec in CHANNELS.values():
        name = _message_name(spec)
        if spec.payload is None:
            messages[name] = {
                "name": name,
                "title": "Snapshot JPEG",
                "contentType": "image/jpeg",
                "summary": spec.summary,
                "payload": {"type": "string", "format": "binary"},
            }
        else:
            messages[name] = {
                "name": name,
                "title": name,
                "contentType": "application/json",
                "summary": (spec.payload.__doc__ or name).split("\n")[0].strip(),
                "payload": {"$ref": f"#/components/schemas/{name}"},
                "examples": [{"name": "example", "payload": example_payload(spec.payload)}],
            }
        key = _channel_key(spec)
        params = [p for p in _PARAMETERS if "{" + p + "}" in spec.address]
        channels[key] = {
            "address": spec.address,
            "title": spec.channel.value,
            "description": f"{spec.summary} Largest payload {spec.max_bytes} bytes"
            + (
                f", JSON nested at most {max_depth(spec.payload)} levels deep"
                + (f", at most {most} values." if (most := max_values(spec.payload)) else ".")
                if spec.payload
                else "."
            ),
            "messages": {name: {"$ref": f"#/components/messages/{name}"}},
            "parameters": {p: {"description": _PARAMETERS[p]} for p in params},
        }
        if spec.channel is Channel.SNAPSHOTS:
            channels[key]["parameters"]["variant"]["enum"] = ["frame", "crop"]
        op_name, operation = _operation(spec)
        operations[op_name] = operation
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "gridwatch MQTT API",
            "version": f"{SCHEMA_VERSION}.0.0",
            "description": (
                "Edge nodes publish state, health, detection events, snapshots and telemetry "
                "under `gw/v1/nodes/<node_id>/` and read their desired config, commands and "
                "receipts there; grid apps read alerts under "
                "`gw/v1/alerts/<county>/<town>/<village>/<grid>/<kind>`. Payloads are UTF-8 "
                "JSON objects with `schema_version` 1; "
                "receivers ignore unknown fields, and a breaking change is a new topic "
                "version (`gw/v2`). Operations are described from the cloud service's side. "
                "A PUBACK says only that the broker took a message: a node keeps each event "
                "until a receipt names its seq and sends it again when none comes. PUBACK "
                "reason 0x10 (no matching subscribers) means nobody took it: send it again "
                "later; 0x80 and above, refused: sending it again will not help."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "county": {
                "host": "broker.county.example:8883",
                "protocol": "secure-mqtt",
                "protocolVersion": "5",
                "description": "The county broker (Mosquitto or EMQX), TLS with per-node "
                "credentials and an ACL confining each node to its subtree.",
                "bindings": {
                    "mqtt": {
                        "cleanSession": False,
                        "keepAlive": 60,
                        "sessionExpiryInterval": 604800,
                        "lastWill": {
                            "topic": "gw/v1/nodes/{node_id}/state",
                            "qos": 1,
                            "retain": True,
                            "message": "NodeState with status offline, reason connection_lost",
                        },
                        "bindingVersion": _MQTT_BINDING_VERSION,
                    }
                },
            },
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }


def generated_files() -> dict[Path, str]:
    """Every generated file, relative to the protocols package, with its content."""
    files = {
        Path("schemas") / f"{model.__name__}.json": _dump(json_schema(model))
        for model in PAYLOAD_MODELS
    }
    files[Path("asyncapi.json")] = _dump(asyncapi_document())
    files[Path("README.md")] = render_readme({m: example_payload(m) for m in PAYLOAD_MODELS})
    return files
