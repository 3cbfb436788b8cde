"""A real RTSP server on loopback (GStreamer, via the shared rtsp_server.py) serving clips."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from tests.support.ports import free_port
from tests.support.processes import wait_for_line

SYSTEM_PYTHON = "/usr/bin/python3"  # GStreamer's GObject bindings live in the system Python


def rtsp_server_script(assets_dir: Path) -> Path:
    override = os.environ.get("GRIDWATCH_RTSP_SERVER")
    return Path(override) if override else assets_dir.parent / "tools" / "rtsp_server.py"


class RtspServer:
    """Serves `clips` as rtsp://127.0.0.1:PORT/cam1, /cam2, ... Each client plays from the
    start; a clip's end closes that client's stream."""

    def __init__(self, script: Path, clips: list[Path], port: int | None = None) -> None:
        if not script.is_file():
            raise RuntimeError(
                f"RTSP server script not found at {script}; set GRIDWATCH_RTSP_SERVER"
            )
        self.script = script
        self.clips = clips
        self.port = port or free_port()
        self.process: subprocess.Popen[str] | None = None

    def url(self, index: int) -> str:
        return f"rtsp://127.0.0.1:{self.port}/cam{index}"

    def command(self) -> list[str]:
        return [SYSTEM_PYTHON, str(self.script), "--port", str(self.port), *map(str, self.clips)]

    def start(self) -> RtspServer:
        self.process = subprocess.Popen(
            self.command(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        wait_for_line(self.process, "ready", timeout_s=20)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None


AUTH_SERVER = Path(__file__).resolve().parent / "rtsp_auth_server.py"


class RtspAuthServer(RtspServer):
    """GStreamer's RTSP server asking for `user`/`password`; /cam1 serves `clip`, or an
    MPEG-4 Part 2 test pattern when `mpeg4`."""

    def __init__(self, clip: Path | None, user: str, password: str, *, mpeg4: bool = False) -> None:
        super().__init__(AUTH_SERVER, [clip] if clip else [])
        self.user, self.password, self.mpeg4 = user, password, mpeg4

    def command(self) -> list[str]:
        args = [SYSTEM_PYTHON, str(self.script), "--port", str(self.port)]
        args += ["--user", self.user, "--password", self.password]
        return args + (["--mpeg4"] if self.mpeg4 else [str(c) for c in self.clips])
