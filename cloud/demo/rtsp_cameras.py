#!/usr/bin/python3
"""The demo's cameras: H.264 MP4 clips served as RTSP streams on loopback, rtsp://127.0.0.1:
PORT/cam1, /cam2, ... as IP cameras serve them. Each client gets its own playback from the
start; at a clip's end the stream ends and the box reconnects, so the clip plays again.

GStreamer's RTSP server through the system Python's GObject bindings (Debian:
gir1.2-gst-rtsp-server-1.0 python3-gi gstreamer1.0-plugins-{base,good,bad}); it imports
nothing else, so it runs outside the project's virtual environment:
    /usr/bin/python3 rtsp_cameras.py --port 8554 clip1.mp4 clip2.mp4
Prints "ready rtsp://127.0.0.1:PORT" once listening; SIGTERM stops it.
"""

import argparse
import signal

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("clips", nargs="+")
    args = parser.parse_args()
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    mounts = server.get_mount_points()
    for index, clip in enumerate(args.clips, start=1):
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(
            f"( filesrc location={clip} ! qtdemux ! h264parse ! rtph264pay name=pay0 pt=96 )"
        )
        factory.set_shared(False)
        mounts.add_factory(f"/cam{index}", factory)
    if server.attach(None) == 0:
        raise SystemExit(f"cannot listen on 127.0.0.1:{args.port}")
    loop = GLib.MainLoop()
    signal.signal(signal.SIGTERM, lambda *_: loop.quit())
    signal.signal(signal.SIGINT, lambda *_: loop.quit())
    print(f"ready rtsp://127.0.0.1:{args.port}", flush=True)  # noqa: T201 - the demo waits for it
    loop.run()


if __name__ == "__main__":
    main()
