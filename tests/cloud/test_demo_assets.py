"""The demo without its model and clips: it says what is missing, draws its own scene, and
its sheets still make valid boxes (motion profile, motion rules)."""

from __future__ import annotations

from pathlib import Path

import cv2
import pytest

from cloud.demo import assets, county
from provisioning.plans import OrgTree, make_plans
from provisioning.sheets import BoxRow, CameraSpecRow, read_sheet


def test_without_assets_the_demo_names_what_is_missing_and_runs_on_motion(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GRIDWATCH_ASSETS", raising=False)
    monkeypatch.setattr(assets, "REPOSITORY", tmp_path / "repo" / "gridwatch")
    monkeypatch.setattr(assets, "CACHE", tmp_path / "cache")
    found = assets.find_assets(allow_download=False)
    assert found.models is None
    assert sorted(m.split(":")[0] for m in found.missing) == sorted(assets.PINNED)

    scene = assets.draw_scene(tmp_path / "scene.avi", seconds=2)
    video = cv2.VideoCapture(str(scene))
    frames = 0
    while video.read()[0]:
        frames += 1
    assert frames == 20

    boxes, cameras = county.write_sheets(tmp_path / "sheets", {"scene.avi": scene}, motion=True)
    org = OrgTree.from_api(
        [
            {"code": c, "parent_code": p or None, "level": level, "name": name}
            for c, p, level, name, _ in county.UNITS
        ]
    )
    plans = make_plans(
        read_sheet(boxes.read_text(), BoxRow, "boxes.csv"),
        read_sheet(cameras.read_text(), CameraSpecRow, "cameras.csv"),
        org,
    )
    assert [p.config.model.backend for p in plans] == ["motion"] * 3
    assert {r.type for p in plans for c in p.config.cameras for r in c.rules} == {"motion"}
    assert all(c.url == f"file://{scene}" for p in plans for c in p.config.cameras)
