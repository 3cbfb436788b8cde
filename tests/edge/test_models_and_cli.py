"""Model files: fetched with checksum checks, refused when wrong; the technician's CLI."""

from __future__ import annotations

import http.server
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import cv2
import pytest

from edge.detectors.onnx import OnnxDetector
from edge.errors import ModelChecksumError, ModelError
from edge.model_store import fetch_model, find_model
from firmware_configs.errors import FirmwareConfigError
from firmware_configs.models import ModelProfile, load_model_profile
from firmware_configs.rules import load_rule_set
from protocols import DetectionEvent, decode
from tests.conftest import REPO


@pytest.fixture
def model_server(assets_dir: Path, tmp_path: Path) -> Iterator[str]:
    """A real HTTP server on loopback serving a folder: the model's pinned URL stand-in."""
    root = tmp_path / "www"
    root.mkdir()
    shutil.copy(
        assets_dir / "models" / "light_person_detector_192x192_person.onnx", root / "good.onnx"
    )
    (root / "tampered.onnx").write_bytes((root / "good.onnx").read_bytes()[:-1] + b"\x00")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(root), **kwargs)  # type: ignore[arg-type]

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    thread.join()


def test_fetch_puts_a_verified_model_in_the_cache(model_server: str, tmp_path: Path) -> None:
    profile = load_model_profile("light_person_192")
    path = fetch_model(profile, tmp_path / "cache", url=f"{model_server}/good.onnx")
    assert path == tmp_path / "cache" / profile.file
    assert find_model(profile, tmp_path / "cache") == path
    OnnxDetector(profile, path)  # loads, and its own checksum check passes


def test_fetch_refuses_a_file_whose_checksum_differs(model_server: str, tmp_path: Path) -> None:
    profile = load_model_profile("light_person_192")
    with pytest.raises(ModelChecksumError, match="light_person_192"):
        fetch_model(profile, tmp_path / "cache", url=f"{model_server}/tampered.onnx")
    assert list((tmp_path / "cache").iterdir()) == []  # nothing half-trusted left behind


def test_fetch_reports_an_unreachable_url(model_server: str, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="cannot download"):
        fetch_model(
            load_model_profile("light_person_192"), tmp_path, url=f"{model_server}/missing.onnx"
        )


def test_detector_refuses_a_model_whose_checksum_differs(
    assets_dir: Path,
    tmp_path: Path,
) -> None:
    profile = load_model_profile("light_person_192")
    copy = tmp_path / profile.file
    copy.write_bytes((assets_dir / "models" / profile.file).read_bytes() + b"\x00")
    with pytest.raises(ModelChecksumError) as caught:
        OnnxDetector(profile, copy)
    assert caught.value.model == "light_person_192"


def test_detector_refuses_a_model_with_the_wrong_output_shape(assets_dir: Path) -> None:
    # The person model's file under the YOLOX-Nano profile: 756x6 is not 3549x85.
    profile = load_model_profile("yolox_nano_416").model_copy(
        update={"input": load_model_profile("light_person_192").input}
    )
    with pytest.raises(ModelError, match=r"yolox_nano_416: output shapes \[\[1, 756, 6\]\]"):
        OnnxDetector(
            profile,
            assets_dir / "models" / "light_person_detector_192x192_person.onnx",
            verify=False,
        )


def test_trimmed_padding_is_refused_where_the_graph_or_the_decoder_cannot_take_it(
    assets_dir: Path,
) -> None:
    nanodet = load_model_profile("nanodet_m_320")
    # NanoDet-m's graph reshapes to its one input size: found when the detector loads.
    trimmed = nanodet.model_copy(
        update={"input": nanodet.input.model_copy(update={"trim_padding": True})}
    )
    with pytest.raises(ModelError, match=r"nanodet_m_320: input.trim_padding: the graph does"):
        OnnxDetector(trimmed, assets_dir / "models" / nanodet.file)
    # Found in the profile already: no padding to trim, a grid inside the graph.
    for name, change, problem in (
        ("fastestdet_352", {}, "needs a letterbox resize"),
        ("yolox_nano_416", {"decoder": "yolov8"}, "decoder 'yolov8' reads boxes"),
    ):
        data = load_model_profile(name).model_dump()
        data["input"]["trim_padding"] = True
        data.update(change)
        with pytest.raises(ValueError, match=problem):
            ModelProfile.model_validate(data)


def test_missing_model_says_how_to_fetch_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GRIDWATCH_ASSETS", raising=False)
    with pytest.raises(ModelError, match="gridwatch edge fetch-model nanodet_m_320"):
        find_model(load_model_profile("nanodet_m_320"), tmp_path)


def test_every_model_profile_is_valid_and_matches_its_asset(assets_dir: Path) -> None:
    from edge.detectors.onnx import file_sha256

    for name in ("yolox_nano_416", "fastestdet_352", "nanodet_m_320", "light_person_192"):
        profile = load_model_profile(name)
        path = assets_dir / "models" / profile.file
        assert file_sha256(path) == profile.sha256
        assert path.stat().st_size == profile.size_bytes


def test_cv2_is_the_headless_build() -> None:
    assert importlib.metadata.version("opencv-python-headless")
    for gui_build in ("opencv-python", "opencv-contrib-python"):
        with pytest.raises(importlib.metadata.PackageNotFoundError):
            importlib.metadata.version(gui_build)
    assert "GUI:                           NONE" in cv2.getBuildInformation()


def test_bad_rules_name_the_rule_and_the_problem(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "rules:\n  - type: intrusion\n    rule_id: bank\n"
        "    zone: [[0.1, 0.1], [0.9, 0.9], [0.9, 0.1], [0.1, 0.9]]\n"
    )
    with pytest.raises(FirmwareConfigError, match=r"rules.0.intrusion.zone: .*self-intersecting"):
        load_rule_set(rules)
    rules.write_text(
        "rules:\n  - type: intrusion\n    rule_id: bank\n"
        "    zone: [[0.1, 0.1], [1.5, 0.1], [0.5, 0.9]]\n"
    )
    with pytest.raises(FirmwareConfigError, match=r"rules.0.intrusion.zone.1.0"):
        load_rule_set(rules)
    rules.write_text("rules:\n  - type: teleport\n    rule_id: bank\n")
    with pytest.raises(FirmwareConfigError, match=r"rules\.0"):
        load_rule_set(rules)


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gridwatch", "edge", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, **(env or {})},
    )


def test_detect_prints_events_and_writes_snapshots_and_video(
    assets_dir: Path,
    car_clip: Path,
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    result = run_cli(
        "detect",
        "--source",
        str(car_clip),
        "--rules",
        "overhead_vehicle_lane",
        "--out",
        str(out),
        env={"GRIDWATCH_ASSETS": str(assets_dir)},
    )
    assert result.returncode == 0, result.stderr
    events = [decode(DetectionEvent, line.encode()) for line in result.stdout.splitlines()]
    starts = [e for e in events if e.phase.value == "start"]
    assert len(starts) == 4
    for event in starts:
        for snapshot in event.snapshots:
            saved = out / f"{event.event_id}_{snapshot.variant.value}.jpg"
            assert saved.stat().st_size == snapshot.size_bytes
    video = cv2.VideoCapture(str(out / "annotated.mp4"))
    assert video.isOpened()
    assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) >= 140
    assert "analysed" in result.stderr


def test_detect_with_a_bad_rules_file_exits_2_naming_the_field(
    car_clip: Path,
    tmp_path: Path,
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - type: loitering\n    rule_id: x\n    zone: [[0,0],[1,0],[1,1]]\n")
    result = run_cli("detect", "--source", str(car_clip), "--rules", str(rules))
    assert result.returncode == 2
    assert "dwell_s" in result.stderr


def test_detect_with_an_unknown_model_exits_2(car_clip: Path) -> None:
    result = run_cli("detect", "--source", str(car_clip), "--model", "yolo_giant")
    assert result.returncode == 2
    assert "yolo_giant" in result.stderr
    assert "known:" in result.stderr


def test_detect_on_an_unreachable_camera_names_it(tmp_path: Path) -> None:
    result = run_cli("detect", "--source", str(tmp_path / "missing.mp4"), "--model", "motion")
    assert result.returncode == 2
    assert "missing.mp4" in result.stderr


def test_models_lists_the_profiles() -> None:
    result = run_cli("models")
    assert result.returncode == 0
    assert {line.split("\t")[0] for line in result.stdout.splitlines()} == {
        "fastestdet_352",
        "light_person_192",
        "nanodet_m_320",
        "yolox_nano_416",
    }


def test_motion_backend_runs_without_a_model(car_clip: Path) -> None:
    result = run_cli(
        "detect",
        "--source",
        str(car_clip),
        "--model",
        "motion",
        "--rules",
        "motion_only",
        env={"GRIDWATCH_ASSETS": "/nonexistent"},
    )
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert events
    assert {e["kind"] for e in events} == {"motion"}
    assert all(e["model"] is None for e in events)
