"""Rules that turn tracked objects into event threads: zones, lines, dwell, crowds, presence."""

from edge.rules.engine import RuleEngine
from edge.rules.observations import EventDraft, Observation

__all__ = ["EventDraft", "Observation", "RuleEngine"]
