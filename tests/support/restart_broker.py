"""`python -m tests.support.restart_broker <pid file>`: a restart of a running Mosquitto as a
service manager does one, for `broker sync --restart-command` in tests. It stops the broker
the pid file names (which saves its persistence) and starts it again, detached, from the
same configuration file, returning once it listens again."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

from cloud.broker import MOSQUITTO, is_listening, stop_stale


def main(pid_file: Path) -> None:
    config = pid_file.parent / "mosquitto.conf"
    port = int(re.findall(r"^listener (\d+)", config.read_text(), re.MULTILINE)[0])
    stop_stale(pid_file)
    with (pid_file.parent / "mosquitto.log").open("ab") as log:
        subprocess.Popen(
            [MOSQUITTO, "-c", str(config)], stdout=log, stderr=log, start_new_session=True
        )
    deadline = time.monotonic() + 10
    while not is_listening(port):
        if time.monotonic() > deadline:
            sys.exit(f"the broker did not listen again on {port}")
        time.sleep(0.02)  # polling for the listener, bounded by the deadline


if __name__ == "__main__":
    main(Path(sys.argv[1]))
