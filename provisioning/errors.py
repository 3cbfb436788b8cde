"""What stops a provisioning step, said so a technician can act on it."""

from __future__ import annotations


class ProvisionError(Exception):
    """A step that cannot go on; the message names the box, the file line or the field."""


class SheetErrors(ProvisionError):
    """Every bad row of an input file, found before anything was touched."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems
