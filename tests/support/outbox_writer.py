"""Adds outbox entries one transaction at a time and prints each id it was told is stored,
until killed: the durability test compares what it printed with what survived.

Run as `python -m tests.support.outbox_writer PATH`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from edge.outbox import Message, Outbox, Priority


def main() -> None:
    outbox = Outbox(Path(sys.argv[1]), budget_bytes=1 << 30)
    index = 0
    while True:
        seq = outbox.next_seq()
        outbox.add([Message("gw/test", f"{index}:{seq}".encode(), Priority.EVENT)])
        sys.stdout.write(f"stored {index} {seq}\n")  # only after add() returned
        sys.stdout.flush()
        index += 1


if __name__ == "__main__":
    main()
