"""Node-side data files: camera URL templates, model profiles, rule presets."""

from __future__ import annotations

from pathlib import Path

import pytest

from firmware_configs.cameras import load_camera_templates, stream_url
from firmware_configs.errors import FirmwareConfigError
from firmware_configs.models import MODELS_DIR, load_model_profile, model_profile_names
from firmware_configs.rules import load_rule_set, rule_set_names
from protocols.config import CameraConfig


@pytest.mark.parametrize(
    ("vendor", "channel", "stream", "expected"),
    [
        ("hikvision", 1, "sub", "rtsp://192.168.1.64:554/Streaming/Channels/102"),
        ("hikvision", 12, "main", "rtsp://192.168.1.64:554/Streaming/Channels/1201"),
        ("dahua", 3, "sub", "rtsp://192.168.1.64:554/cam/realmonitor?channel=3&subtype=1"),
        ("uniview", 1, "main", "rtsp://192.168.1.64:554/unicast/c1/s0/live"),
    ],
)
def test_vendor_templates_render_real_paths(
    vendor: str, channel: int, stream: str, expected: str
) -> None:
    url = stream_url(vendor, "192.168.1.64", channel=channel, stream=stream)  # type: ignore[arg-type]
    assert url == expected
    CameraConfig(camera_id="cam01", name="x", url=url)  # a valid node-config stream URL


def test_onvif_takes_the_path_the_camera_reports() -> None:
    assert (
        stream_url("onvif", "10.0.0.8", path="/live/ch00_1", port=8554)
        == "rtsp://10.0.0.8:8554/live/ch00_1"
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"vendor": "acme", "host": "10.0.0.8"}, "unknown camera vendor"),
        ({"vendor": "hikvision", "host": "admin:pw@10.0.0.8"}, "not a host"),
        ({"vendor": "dahua", "host": "10.0.0.8", "channel": 0}, "out of range"),
    ],
)
def test_bad_template_input_is_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(FirmwareConfigError, match=message):
        stream_url(**kwargs)  # type: ignore[arg-type]


def test_every_shipped_file_validates() -> None:
    assert set(load_camera_templates()) >= {"hikvision", "dahua", "onvif"}
    assert {load_model_profile(n).name for n in model_profile_names()} == set(model_profile_names())
    assert all(load_rule_set(n).rules for n in rule_set_names())


def test_model_profile_errors_name_file_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    source = (MODELS_DIR / "yolox_nano_416.yaml").read_text()
    bad.write_text(source.replace("decoder: yolox", "decoder: yolo9000"))
    with pytest.raises(FirmwareConfigError, match=r"bad\.yaml: decoder"):
        load_model_profile(bad)
