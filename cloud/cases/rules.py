"""Which detections and reports open cases, where they start, and their deadlines.

The county's rules are YAML in this shape; the database keeps them as versions
(`cloud.cases.rule_sets`), the newest in the `case_rules` table so that ingest routes a
whole batch with one join. Deadlines are per severity, optionally overridden per category.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cloud.errors import InvalidFile
from cloud.tiers import Level
from protocols.base import JSON_WHOLE, Integer
from protocols.enums import EventKind, Severity

SEVERITY_ORDER = (Severity.LOW, Severity.MEDIUM, Severity.HIGH, Severity.CRITICAL)

# A grid worker's "must report" duties, besides what cameras see.
REPORT_CATEGORIES = (
    "instability",  # 不稳定因素
    "safety_hazard",  # 安全隐患
    "outsider_inflow",  # 外来人员流入
    "damaged_facility",  # 公共设施损坏
    "dispute",  # 邻里纠纷
    "resident_request",  # 群众诉求
    "other",
)
# What the fleet monitor finds wrong with a box (its state, heartbeat and health reports),
# and the severity of its work order.
NODE_PROBLEMS: dict[str, Severity] = {
    "node_offline": Severity.MEDIUM,
    "node_flapping": Severity.LOW,
    "disk_full": Severity.MEDIUM,
    "outbox_backlog": Severity.MEDIUM,
    "config_rejected": Severity.LOW,
    # Shut out of the broker for sending what the county refuses (cloud.ingest.suspend).
    "node_suspended": Severity.HIGH,
}
# What ingest finds wrong with a box's events: cameras it does not have in the registry
# (their events route no higher than the box's own unit).
CAMERA_UNREGISTERED = "camera_unregistered"
FLEET_CATEGORIES = (
    EventKind.CAMERA_OFFLINE.value,
    EventKind.CAMERA_TAMPER.value,
    *NODE_PROBLEMS,
    CAMERA_UNREGISTERED,
)


Seconds = Annotated[int, Field(gt=0, le=90 * 86400), JSON_WHOLE]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Deadline(Strict):
    ack_s: Seconds = Field(description="To acknowledge; late → escalated one tier up.")
    resolve_s: Seconds = Field(description="To resolve (reach supervision).")

    @model_validator(mode="after")
    def _ack_first(self) -> Self:
        if self.resolve_s < self.ack_s:
            raise ValueError("resolve_s must not be shorter than ack_s")
        return self


class CategoryRule(Strict):
    opens_case: bool = Field(default=True, strict=True)
    min_severity: Severity = Field(
        default=Severity.LOW, description="Detections below this severity open no case."
    )
    source: Literal["camera", "fleet", "report"] = "camera"
    start_level: Level | None = Field(
        default=None,
        description="Where the case starts; default: the unit, or the town for emergencies.",
    )
    deadlines: dict[Severity, Deadline] = Field(default_factory=dict)


def _default_categories() -> dict[str, CategoryRule]:
    rules = {kind.value: CategoryRule() for kind in EventKind}
    rules[EventKind.MOTION.value] = CategoryRule(opens_case=False)
    rules[EventKind.LINE_CROSSING.value] = CategoryRule(min_severity=Severity.MEDIUM)
    fleet_deadlines = {s: Deadline(ack_s=2 * 3600, resolve_s=24 * 3600) for s in Severity}
    for kind in FLEET_CATEGORIES:
        # Work orders for the town's field technician.
        rules[kind] = CategoryRule(
            source="fleet", start_level=Level.TOWN, deadlines=fleet_deadlines
        )
    for category in REPORT_CATEGORIES:
        rules[category] = CategoryRule(source="report")
    return rules


class CaseRules(Strict):
    deadlines: dict[Severity, Deadline] = Field(
        default_factory=lambda: {
            Severity.CRITICAL: Deadline(ack_s=5 * 60, resolve_s=2 * 3600),
            Severity.HIGH: Deadline(ack_s=15 * 60, resolve_s=8 * 3600),
            Severity.MEDIUM: Deadline(ack_s=30 * 60, resolve_s=24 * 3600),
            Severity.LOW: Deadline(ack_s=2 * 3600, resolve_s=72 * 3600),
        }
    )
    categories: dict[str, CategoryRule] = Field(default_factory=_default_categories)
    emergency_severity: Severity = Field(
        default=Severity.CRITICAL,
        description="At or above it, a case starts at the town, which can act now.",
    )
    remind_fraction: float = Field(
        default=0.2,
        strict=True,
        ge=0,
        lt=1,
        description="Remind when this fraction of a deadline is left.",
    )
    false_alarm_cooldown_s: Integer = Field(
        default=30 * 60,
        ge=0,
        le=7 * 86400,
        description="After a case is dismissed as a false alarm, its camera and kind open no "
        "case for this long (their events are stored, and counted on the dismissed case).",
    )

    @model_validator(mode="after")
    def _every_severity(self) -> Self:
        if missing := set(Severity) - set(self.deadlines):
            raise ValueError(f"deadlines: missing {', '.join(sorted(missing))}")
        return self

    def deadline(self, category: str, severity: Severity) -> Deadline:
        rule = self.categories.get(category)
        if rule is not None and severity in rule.deadlines:
            return rule.deadlines[severity]
        return self.deadlines[severity]

    def start_level(self, category: str, severity: Severity) -> Level:
        rule = self.categories.get(category)
        if rule is not None and rule.start_level is not None:
            return rule.start_level
        if SEVERITY_ORDER.index(severity) >= SEVERITY_ORDER.index(self.emergency_severity):
            return Level.TOWN
        return Level.GRID

    def table_rows(self) -> list[tuple[object, ...]]:
        """(category, severity, opens_case, source, start_level, ack_s, resolve_s) for
        every category and severity."""
        rows: list[tuple[object, ...]] = []
        for category, rule in sorted(self.categories.items()):
            for severity in SEVERITY_ORDER:
                deadline = self.deadline(category, severity)
                opens = rule.opens_case and SEVERITY_ORDER.index(severity) >= SEVERITY_ORDER.index(
                    rule.min_severity
                )
                rows.append(
                    (
                        category,
                        severity.value,
                        opens,
                        rule.source,
                        self.start_level(category, severity).value,
                        deadline.ack_s,
                        deadline.resolve_s,
                    )
                )
        return rows


def load_rules(path: Path | None) -> CaseRules:
    if path is None:
        return CaseRules()
    try:
        return CaseRules.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")) or {})
    except (OSError, yaml.YAMLError) as exc:
        raise InvalidFile(f"{path}: {exc}") from exc
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(p) for p in error["loc"])
        raise InvalidFile(f"{path}: {field}: {error['msg']}") from exc
