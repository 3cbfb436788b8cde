#!/usr/bin/python3
"""A real RTSP server on loopback that asks for a user and password (HTTP Basic, as many
IP cameras accept), serving an H.264 MP4 file as rtsp://127.0.0.1:PORT/cam1 — or, with
--mpeg4, a test pattern in MPEG-4 Part 2 (a codec boxes are not set up to decode).

GStreamer's own RTSP server (Debian's gir1.2-gst-rtsp-server-1.0 with the system python3,
like ../shared/tools/rtsp_server.py, which serves without credentials). Prints "ready URL".
    /usr/bin/python3 rtsp_auth_server.py --port 8555 --user admin --password secret clip.mp4
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
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--mpeg4", action="store_true", help="A test pattern in MPEG-4 Part 2.")
    parser.add_argument("file", nargs="?")
    args = parser.parse_args()

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    auth = GstRtspServer.RTSPAuth()
    token = GstRtspServer.RTSPToken()
    token.set_string("media.factory.role", "viewer")
    auth.add_basic(GstRtspServer.RTSPAuth.make_basic(args.user, args.password), token)
    server.set_auth(auth)
    factory = GstRtspServer.RTSPMediaFactory()
    if args.mpeg4:
        launch = "( videotestsrc is-live=true ! avenc_mpeg4 ! rtpmp4vpay name=pay0 pt=96 )"
    else:
        launch = (
            f"( filesrc location={args.file} ! qtdemux ! h264parse ! rtph264pay name=pay0 pt=96 )"
        )
    factory.set_launch(launch)
    factory.set_shared(False)
    permissions = GstRtspServer.RTSPPermissions()
    permissions.add_permission_for_role("viewer", "media.factory.access", True)
    permissions.add_permission_for_role("viewer", "media.factory.construct", True)
    factory.set_permissions(permissions)
    server.get_mount_points().add_factory("/cam1", factory)
    if server.attach(None) == 0:
        raise SystemExit(f"cannot listen on 127.0.0.1:{args.port}")
    loop = GLib.MainLoop()
    signal.signal(signal.SIGTERM, lambda *_: loop.quit())
    print(f"ready rtsp://127.0.0.1:{args.port}", flush=True)  # noqa: T201 - the parent waits for it
    loop.run()


if __name__ == "__main__":
    main()
