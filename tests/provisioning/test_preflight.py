"""Preflight checks against real servers on loopback: GStreamer's RTSP server (the shared
one, and one asking for a password or sending MPEG-4), a TCP port that never answers, a
Mosquitto with TLS and passwords. Each failure names its reason; no detail shows a password."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from firmware_configs.models import load_model_profile
from protocols.config import CameraConfig, ModelSpec
from provisioning.preflight import (
    CheckResult,
    check_broker,
    check_camera,
    check_disk,
    check_model,
)
from tests.support.mosquitto import BrokerOptions, MosquittoBroker
from tests.support.rtsp import RtspAuthServer, RtspServer, rtsp_server_script

PASSWORD = "s3cret-cam"
WRONG = "bad-pass-9731"


@pytest.fixture(scope="module")
def clip(assets_dir: Path) -> Path:
    return assets_dir / "video" / "car-detection.mp4"


@pytest.fixture(scope="module")
def open_camera(assets_dir: Path, clip: Path) -> Iterator[RtspServer]:
    server = RtspServer(rtsp_server_script(assets_dir), [clip]).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def locked_camera(clip: Path) -> Iterator[RtspServer]:
    server = RtspAuthServer(clip, "admin", PASSWORD).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def mpeg4_camera() -> Iterator[RtspServer]:
    server = RtspAuthServer(None, "admin", PASSWORD, mpeg4=True).start()
    yield server
    server.stop()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """Accepts TCP connections and never says a word (a camera that hangs)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    yield listener.getsockname()[1]
    listener.close()


def camera(url: str, username: str | None = None, password: str | None = None) -> CameraConfig:
    return CameraConfig(
        camera_id="cam01",
        name="test",
        url=url,
        username=username,
        password=SecretStr(password) if password else None,
    )


def no_secret(result: CheckResult) -> CheckResult:
    assert PASSWORD not in result.detail
    assert WRONG not in result.detail
    return result


def test_a_camera_that_works_reports_what_it_sends(
    open_camera: RtspServer, locked_camera: RtspServer
) -> None:
    plain = check_camera(camera(open_camera.url(1)))
    assert plain.passed, plain.detail
    assert plain.detail.startswith("768x432 h264 ")
    assert plain.detail.endswith(" fps")
    locked = no_secret(check_camera(camera(locked_camera.url(1), "admin", PASSWORD)))
    assert locked.passed, locked.detail


def test_each_failing_camera_is_named_with_its_reason(
    locked_camera: RtspServer, mpeg4_camera: RtspServer, silent_port: int
) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()  # nothing listens there now
    cases = {
        "auth failed": camera(locked_camera.url(1), "admin", WRONG),
        "auth failed:": camera(locked_camera.url(1)),
        "no such stream": camera(f"rtsp://127.0.0.1:{locked_camera.port}/cam9", "admin", PASSWORD),
        "unreachable": camera(f"rtsp://127.0.0.1:{closed_port}/cam1"),
        "timeout": camera(f"rtsp://127.0.0.1:{silent_port}/cam1"),
        "wrong codec: mpeg4": camera(mpeg4_camera.url(1), "admin", PASSWORD),
    }
    for reason, config in cases.items():
        result = no_secret(check_camera(config, timeout_s=3))
        assert not result.passed
        assert result.detail.startswith(reason.rstrip(":")), (reason, result.detail)


def test_the_broker_check_uses_the_box_account_over_tls(tmp_path: Path) -> None:
    (tmp_path / "broker").mkdir()
    broker = MosquittoBroker(
        tmp_path / "broker", BrokerOptions(users={"gw-511725106201-01": "box-password"}, tls=True)
    )
    broker.start()
    try:
        assert broker.ca is not None
        url = f"mqtts://localhost:{broker.tls_port}"
        ca = broker.ca.pair.cert
        ok = check_broker(url, "gw-511725106201-01", "box-password", ca_file=ca)
        assert ok.passed, ok.detail
        refused = check_broker(url, "gw-511725106201-01", "not-it", ca_file=ca)
        assert not refused.passed
        assert refused.detail.startswith("refused:")
        assert "not-it" not in refused.detail
        untrusted = check_broker(url, "gw-511725106201-01", "box-password")  # no county CA
        assert not untrusted.passed
        assert untrusted.detail.startswith("TLS: the broker's certificate is not trusted")
    finally:
        broker.stop()


def test_disk_and_model_checks(tmp_path: Path, assets_dir: Path) -> None:
    assert check_disk(tmp_path / "not-yet", 1 << 20).passed
    assert not check_disk(tmp_path, 1 << 60).passed
    assert check_model(tmp_path, ModelSpec(backend="motion")).passed
    models = assets_dir / "models"
    assert check_model(models, ModelSpec(profile="yolox_nano_416")).passed
    missing = check_model(tmp_path, ModelSpec(profile="yolox_nano_416"))
    assert missing.detail.startswith("missing:")
    damaged = tmp_path / load_model_profile("yolox_nano_416").file
    damaged.write_bytes(b"not a model")
    result = check_model(tmp_path, ModelSpec(profile="yolox_nano_416"))
    assert (result.passed, result.detail.split(":")[0]) == (False, "checksum differs")
