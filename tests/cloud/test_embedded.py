"""The demo's embedded PostgreSQL after a crash: what a dead server left is forgotten, and
the warning names what was found."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

import pytest

from cloud.embedded import _forget_dead_postmaster


def test_a_dead_servers_pid_file_is_removed_and_its_pid_named(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dead = subprocess.Popen(["true"])  # a process that is gone once waited for
    dead.wait()
    (tmp_path / "postmaster.pid").write_text(f"{dead.pid}\n{tmp_path}\n")
    with caplog.at_level(logging.WARNING, logger="cloud.embedded"):
        _forget_dead_postmaster(tmp_path)
    assert not (tmp_path / "postmaster.pid").exists()
    assert f"pid {dead.pid} is not a running PostgreSQL" in caplog.text
