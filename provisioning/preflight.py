"""On-site checks of a box before the technician leaves: each camera opens and yields frames
(resolution, fps, codec), the broker takes the box's credentials (over TLS in a county),
the clock agrees with the county service, the disk has room for the outbox, the model file
is the one its profile pins. Each failure says why in words a technician can act on; no
message ever carries a password."""

from __future__ import annotations

import hashlib
import shutil
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import av
import av.error
import httpx2 as httpx
import paho.mqtt.client as mqtt
from dotenv import dotenv_values
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from firmware_configs.errors import FirmwareConfigError
from firmware_configs.models import load_model_profile
from protocols.config import CameraConfig, ModelSpec, NodeConfig
from provisioning.errors import ProvisionError
from provisioning.flow import CONFIG_FILE, ENV_FILE

# What the box's decoder takes from a camera.
CODECS = {"h264", "hevc", "mjpeg"}
MAX_CLOCK_SKEW_S = 10.0
SESSION_EXPIRY_S = 7 * 86_400  # as long as the agent keeps its session (its default)


@dataclass(frozen=True)
class CheckResult:
    name: str
    passed: bool
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _with_credentials(url: str, username: str | None, password: str | None) -> str:
    if not username:
        return url
    parts = urlsplit(url)
    auth = quote(username, safe="") + (":" + quote(password, safe="") if password else "")
    return urlunsplit(parts._replace(netloc=f"{auth}@{parts.netloc}"))


def check_camera(camera: CameraConfig, *, frames: int = 10, timeout_s: float = 10.0) -> CheckResult:
    """Open the stream as the box will and decode a few frames."""
    name = f"camera {camera.camera_id}"
    password = camera.password.get_secret_value() if camera.password else None
    url = _with_credentials(camera.url, camera.username, password)
    started = time.monotonic()
    try:
        container = av.open(url, options={"rtsp_transport": "tcp"}, timeout=(timeout_s, timeout_s))
    except av.error.HTTPUnauthorizedError:
        return CheckResult(name, False, "auth failed: the camera refused the user and password")
    except av.error.HTTPForbiddenError:
        return CheckResult(name, False, "auth failed: the user may not view this stream")
    except av.error.HTTPNotFoundError:
        return CheckResult(name, False, "no such stream: check vendor, channel and path")
    except av.error.ConnectionRefusedError:
        return CheckResult(name, False, "unreachable: nothing answers at that address and port")
    except (av.error.TimeoutError, TimeoutError):
        return CheckResult(name, False, f"timeout: no answer in {timeout_s:g} s")
    except (av.error.FFmpegError, OSError) as exc:
        if time.monotonic() - started >= 0.9 * timeout_s:
            # FFmpeg gives up on a silent server with a generic error, at the deadline.
            return CheckResult(name, False, f"timeout: no answer in {timeout_s:g} s")
        # The library's text carries the URL, with its password: say only the kind.
        return CheckResult(name, False, f"cannot open: {type(exc).__name__}")
    try:
        if not container.streams.video:
            return CheckResult(name, False, "no frames: the stream has no video")
        stream = container.streams.video[0]
        codec = stream.codec_context.name
        if codec not in CODECS:
            return CheckResult(
                name, False, f"wrong codec: {codec} (set the camera to H.264 or H.265)"
            )
        decoded = 0
        first = time.monotonic()
        try:
            for _ in container.decode(stream):
                decoded += 1
                if decoded >= frames or time.monotonic() - started > timeout_s:
                    break
        except (av.error.FFmpegError, OSError) as exc:
            if decoded == 0:
                return CheckResult(name, False, f"no frames: {type(exc).__name__}")
        if decoded == 0:
            return CheckResult(name, False, f"no frames in {timeout_s:g} s")
        elapsed = max(time.monotonic() - first, 1e-3)
        declared = float(stream.average_rate) if stream.average_rate else None
        fps = f"{declared:.1f} fps" if declared else f"{decoded / elapsed:.1f} fps measured"
        width, height = stream.codec_context.width, stream.codec_context.height
        return CheckResult(name, True, f"{width}x{height} {codec} {fps}")
    finally:
        container.close()


def check_broker(
    broker_url: str,
    username: str,
    password: str | None,
    *,
    ca_file: Path | None = None,
    client_id: str | None = None,
    timeout_s: float = 10.0,
) -> CheckResult:
    """Connect with the box's own account, as the agent will (MQTT 5; TLS with the host name
    checked when the URL is mqtts://). With the box's own client id, the only one the
    county broker lets its account use: a box already online gives way for a moment and
    reconnects. Its session is resumed, not cleared, and kept as long as the agent keeps
    it, and nothing queued for the box is acknowledged here: the agent gets it all."""
    parts = urlsplit(broker_url)
    tls = parts.scheme == "mqtts"
    host, port = parts.hostname or "", parts.port or (8883 if tls else 1883)
    name = f"broker {host}:{port}" + (" (TLS)" if tls else "")
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id or username,
        protocol=mqtt.MQTTv5,
        manual_ack=True,
    )
    client.username_pw_set(username, password)
    if tls:
        client.tls_set(ca_certs=str(ca_file) if ca_file else None, cert_reqs=ssl.CERT_REQUIRED)
    answered = threading.Event()
    outcome: dict[str, Any] = {}

    def on_connect(
        c: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any = None
    ) -> None:
        outcome["reason"] = reason
        answered.set()

    client.on_connect = on_connect
    started = time.monotonic()
    try:
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = SESSION_EXPIRY_S
        client.connect(host, port, keepalive=30, clean_start=False, properties=properties)
    except ssl.SSLCertVerificationError as exc:
        return CheckResult(
            name, False, f"TLS: the broker's certificate is not trusted ({exc.verify_message})"
        )
    except (OSError, ssl.SSLError) as exc:
        return CheckResult(name, False, f"unreachable: {exc.strerror or type(exc).__name__}")
    client.loop_start()
    try:
        if not answered.wait(timeout_s):
            return CheckResult(name, False, f"timeout: no answer in {timeout_s:g} s")
        reason = outcome["reason"]
        if reason.is_failure:
            return CheckResult(name, False, f"refused: {reason} (check the box's password)")
        return CheckResult(
            name, True, f"connected as {username} in {1000 * (time.monotonic() - started):.0f} ms"
        )
    finally:
        client.disconnect()
        client.loop_stop()


def check_clock(cloud_url: str, *, timeout_s: float = 10.0) -> CheckResult:
    """The box's clock against the county service's (its HTTP Date, to the second)."""
    name = "clock"
    try:
        before = datetime.now(UTC)
        response = httpx.get(cloud_url.rstrip("/") + "/healthz", timeout=timeout_s)
        after = datetime.now(UTC)
    except httpx.HTTPError as exc:
        return CheckResult(name, False, f"the county service is unreachable: {type(exc).__name__}")
    date = response.headers.get("date")
    if not date:
        return CheckResult(name, False, "the county service sent no Date to compare with")
    theirs = parsedate_to_datetime(date)
    ours = before + (after - before) / 2
    skew = (ours - theirs).total_seconds()
    passed = abs(skew) <= MAX_CLOCK_SKEW_S
    verdict = "in sync" if passed else "out of sync: check NTP"
    return CheckResult(name, passed, f"{verdict}, skew {skew:+.1f} s (±1 s)")


def check_disk(path: Path, needed_bytes: int) -> CheckResult:
    name = f"disk {path}"
    target = path
    while not target.exists() and target != target.parent:
        target = target.parent
    usage = shutil.disk_usage(target)
    passed = usage.free >= needed_bytes
    detail = f"{usage.free / 2**30:.1f} GiB free, the outbox needs {needed_bytes / 2**30:.1f} GiB"
    return CheckResult(name, passed, detail if passed else "too little room: " + detail)


def check_model(model_dir: Path, spec: ModelSpec) -> CheckResult:
    """The model file the profile names, and its checksum (a damaged or wrong file is the
    commonest reason a box "sees nothing")."""
    if spec.backend == "motion":
        return CheckResult("model", True, "none needed (motion backend)")
    try:
        profile = load_model_profile(spec.profile)
    except FirmwareConfigError as exc:
        return CheckResult("model", False, str(exc))
    path = model_dir / profile.file
    name = f"model {profile.name}"
    if not path.is_file():
        return CheckResult(
            name, False, f"missing: {path} (fetch it with `gridwatch edge fetch-model`)"
        )
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    expected = spec.sha256 or profile.sha256
    if digest.hexdigest() != expected:
        return CheckResult(name, False, f"checksum differs: {path} is not the pinned file")
    return CheckResult(name, True, f"{path.name} sha256 ok")


def read_bundle(bundle: Path) -> tuple[dict[str, str], NodeConfig]:
    """The box's variables and first config, from the files `provision` wrote."""
    env_file, config_file = bundle / ENV_FILE, bundle / CONFIG_FILE
    if not env_file.is_file() or not config_file.is_file():
        raise ProvisionError(f"{bundle}: not a box bundle (no {ENV_FILE} or {CONFIG_FILE})")
    env = {k: v for k, v in dotenv_values(env_file).items() if v is not None}
    try:
        config = NodeConfig.model_validate_json(config_file.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ProvisionError(f"{config_file}: not a node config: {exc}") from exc
    return env, config


def run_checks(
    bundle: Path, *, model_dir: Path, data_dir: Path, timeout_s: float = 10.0
) -> tuple[str, list[CheckResult]]:
    """Every check of the box the bundle describes; cameras side by side."""
    env, config = read_bundle(bundle)
    node_id = env.get("EDGE_NODE_ID", config.node_id)
    ca = env.get("EDGE_CA_FILE")
    ca_file = (bundle / ca) if ca and not Path(ca).is_absolute() else (Path(ca) if ca else None)
    with ThreadPoolExecutor(max_workers=8) as pool:
        cameras = list(pool.map(lambda c: check_camera(c, timeout_s=timeout_s), config.cameras))
    results = [
        *cameras,
        check_broker(
            env.get("EDGE_BROKER_URL", ""),
            env.get("EDGE_USERNAME") or node_id,
            env.get("EDGE_PASSWORD"),
            ca_file=ca_file,
            client_id=node_id,
            timeout_s=timeout_s,
        ),
    ]
    if env.get("EDGE_CLOUD_URL"):
        results.append(check_clock(env["EDGE_CLOUD_URL"], timeout_s=timeout_s))
    results.append(check_disk(data_dir, config.publish.outbox_budget_mb * 2**20))
    results.append(check_model(model_dir, config.model))
    return node_id, results
