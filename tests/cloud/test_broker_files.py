"""The broker's files, rewritten by `broker sync`, stay the broker's: a run as root does not
take them away from the user Mosquitto drops to."""

from __future__ import annotations

import os
from pathlib import Path

from cloud.broker_passwords import write_atomically

A_USER = 54321  # a uid and gid nobody on the machine has: only their numbers matter


def test_a_rewritten_file_keeps_its_owner_group_and_mode(tmp_path: Path) -> None:
    # As root, as a county's sync often runs (and these tests do): giving a file away needs it.
    path = tmp_path / "passwd"
    path.write_text("old\n")
    os.chown(path, A_USER, A_USER)
    path.chmod(0o640)
    assert write_atomically(path, "new\n", mode=0o600)
    assert path.read_text() == "new\n"
    assert (path.stat().st_uid, path.stat().st_gid, path.stat().st_mode & 0o777) == (
        A_USER,
        A_USER,
        0o640,
    )


def test_a_first_file_takes_its_directorys_group_and_the_mode_asked(tmp_path: Path) -> None:
    directory = tmp_path / "broker"
    directory.mkdir()
    os.chown(directory, 0, A_USER)
    assert write_atomically(directory / "dynsec.json", "{}", mode=0o660)
    made = (directory / "dynsec.json").stat()
    assert made.st_gid == directory.stat().st_gid
    assert made.st_mode & 0o777 == 0o660
    assert not write_atomically(directory / "dynsec.json", "{}")  # unchanged: no rewrite
