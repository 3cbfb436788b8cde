"""The Grafana dashboard asks only for metrics the service exports (a renamed metric would
leave a panel silently empty)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import REGISTRY

import cloud.metrics  # noqa: F401  (registers the service's metrics)

DASHBOARD = Path(__file__).resolve().parents[2] / "cloud" / "grafana" / "gridwatch.json"


def exported_names() -> set[str]:
    names = set()
    for family in REGISTRY.collect():
        if family.name.startswith("gridwatch_"):
            names.add(family.name)
            if family.type == "counter":
                names.add(f"{family.name}_total")
            if family.type == "histogram":
                names |= {f"{family.name}_{s}" for s in ("bucket", "count", "sum")}
    return names


def test_every_panel_queries_exported_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    asked = {name for expr in exprs for name in re.findall(r"\bgridwatch_[a-z_]+", expr)}
    assert asked, "the dashboard queries nothing"
    assert asked <= exported_names(), asked - exported_names()
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
